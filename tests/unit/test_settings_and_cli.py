from __future__ import annotations

import pytest

from pipeline.settings import AttributionModel, Settings, env_reference, redact_url
from streams.cli import build_parser, main


def test_nested_variables_are_read_with_double_underscore(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOCIALROI_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("SOCIALROI_WINDOWS__TUMBLING_SECONDS", "[60, 300]")
    monkeypatch.setenv("SOCIALROI_ATTRIBUTION__MODEL", "time_decay")
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.windows.tumbling_seconds == (60, 300)
    assert settings.attribution.model is AttributionModel.TIME_DECAY
    with pytest.raises(Exception, match="frozen"):
        settings.kafka = settings.kafka  # type: ignore[misc]


def test_invalid_setting_is_a_clear_cli_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SOCIALROI_KAFKA__SECURITY_PROTOCOL", "carrier-pigeon")
    assert main(["config"]) == 2
    assert "security_protocol" in capsys.readouterr().err


def test_every_variable_is_in_help_of_every_command() -> None:
    parser = build_parser()
    names = [name for name, _, _ in env_reference()]
    assert len(names) > 40
    top = parser.format_help()
    assert all(name in top for name in names)
    subparsers = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for command, sub in subparsers.items():
        text = sub.format_help()
        assert "SOCIALROI_CLICKHOUSE__URL" in text, command


def test_secrets_never_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SOCIALROI_CLICKHOUSE__URL", "clickhouse://ingest:s3cr3t-pw@db:9000/x")
    monkeypatch.setenv("SOCIALROI_KAFKA__SASL_PASSWORD", "kafka-s3cr3t")
    monkeypatch.setenv("SOCIALROI_COLLECTOR__TOKEN", "tok-s3cr3t")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "ingest:***@db:9000" in out
    for secret in ("s3cr3t-pw", "kafka-s3cr3t", "tok-s3cr3t"):
        assert secret not in out
    settings = Settings()
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in str(settings)


def test_redact_url_keeps_everything_but_the_password() -> None:
    assert (
        redact_url("clickhouse://u:p@h:9440/db?secure=1") == "clickhouse://u:***@h:9440/db?secure=1"
    )
    assert redact_url("chdb://.local/chdb") == "chdb://.local/chdb"


def test_unreachable_kafka_is_one_line_with_advice(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SOCIALROI_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    assert main(["topics"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach Kafka at 127.0.0.1:1" in err
    assert "deploy/local/kafka.sh start" in err
    assert "Traceback" not in err
