from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.settings import AttributionModel, Settings, env_reference, redact_url
from streams.cli import build_parser, main


def test_nested_variables_are_read_with_double_underscore(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOCIALROI_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("SOCIALROI_WINDOWS__TUMBLING_SECONDS", "[60, 300, 86400]")
    monkeypatch.setenv("SOCIALROI_ATTRIBUTION__MODEL", "time_decay")
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.windows.tumbling_seconds == (60, 300, 86400)
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
    # not the local default: the local broker's script would be the wrong advice
    assert "SOCIALROI_KAFKA__BOOTSTRAP_SERVERS names them" in err
    assert "deploy/local" not in err
    assert "Traceback" not in err


def _clear_socialroi_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("SOCIALROI_") and not name.startswith("SOCIALROI_TEST_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("variable", "hint"),
    [
        ("SOCIALROI_KAFKA_BOOTSTRAP_SERVERS", "did you mean SOCIALROI_KAFKA__BOOTSTRAP_SERVERS?"),
        ("SOCIALROI_WORKER__BATCH_MAX_EVENT", "did you mean SOCIALROI_WORKER__BATCH_MAX_EVENTS?"),
        ("socialroi_clickhouse_url", "did you mean SOCIALROI_CLICKHOUSE__URL?"),
        ("SOCIALROI_FOO", "names no setting (socialroi --help lists them all)"),
        # removed: they never had an effect, the worker writes once per batch
        (
            "SOCIALROI_CLICKHOUSE__BATCH_ROWS",
            "no longer a setting: the worker writes ClickHouse "
            "once per batch, before committing its offsets; SOCIALROI_WORKER__BATCH_MAX_EVENTS",
        ),
        ("SOCIALROI_CLICKHOUSE__FLUSH_INTERVAL_SECONDS", "no longer a setting"),
    ],
)
def test_a_variable_that_names_no_setting_is_an_error_with_a_suggestion(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    variable: str,
    hint: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    _clear_socialroi_env(monkeypatch)
    monkeypatch.setenv(variable, "k1:9092")
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"socialroi: unknown settings: {variable} ") and hint in err, err
    assert err.count("\n") == 1  # one line, no traceback


def test_a_mistyped_setting_in_dot_env_is_an_error_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    _clear_socialroi_env(monkeypatch)
    (tmp_path / ".env").write_text("SOCIALROI_LOG__LEVL=DEBUG\n")
    assert main(["config"]) == 2
    assert "did you mean SOCIALROI_LOG__LEVEL?" in capsys.readouterr().err


def test_settings_and_the_scripts_own_variables_pass(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    _clear_socialroi_env(monkeypatch)
    monkeypatch.setenv("SOCIALROI_KAFKA__BOOTSTRAP_SERVERS", "k1:9092")
    monkeypatch.setenv("SOCIALROI_KAFKA_PORT", "19092")  # deploy/local/kafka.sh's
    monkeypatch.setenv("SOCIALROI_TEST_ANYTHING", "1")
    assert main(["config"]) == 0
    assert "k1:9092" in capsys.readouterr().out


def test_every_socialroi_variable_the_repository_uses_is_known() -> None:
    """A script's or test's new variable must be listed in OTHER_VARIABLES (or be a
    setting), or the CLI would refuse to run where it is set."""
    import re

    from pipeline.settings import REMOVED_VARIABLES, unknown_variables

    root = Path(__file__).resolve().parents[2]
    used: set[str] = set()
    for folder in ("pipeline", "streams", "sinks", "deploy", "tests"):
        for path in (root / folder).rglob("*"):
            if path.is_file() and path.suffix in {
                ".py",
                ".sh",
                ".yml",
                ".yaml",
                ".env",
                ".xml",
                "",
            }:
                used |= set(
                    re.findall(r"\bSOCIALROI_[A-Z0-9_]*[A-Z0-9]", path.read_text(errors="ignore"))
                )
    # section prefixes written in code and docs (SOCIALROI_TOPICS__...)
    sections = {name.rsplit("__", 1)[0] for name, _, _ in env_reference()}
    used -= sections | {"SOCIALROI_TEST"}
    # names made up on purpose by the test above
    made_up = {"SOCIALROI_KAFKA_BOOTSTRAP_SERVERS", "SOCIALROI_WORKER__BATCH_MAX_EVENT",
               "SOCIALROI_FOO", "SOCIALROI_LOG__LEVL"}  # fmt: skip
    assert unknown_variables(used - made_up - set(REMOVED_VARIABLES)) == []


def test_collect_without_a_token_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    _clear_socialroi_env(monkeypatch)
    assert main(["collect"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "socialroi: the collector needs a token: set SOCIALROI_COLLECTOR__TOKEN (clients send "
        "it as Authorization: Bearer <token>)\n"
    )


def test_a_store_never_migrated_says_to_run_migrate(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    _clear_socialroi_env(monkeypatch)
    monkeypatch.setenv("SOCIALROI_CLICKHOUSE__URL", f"chdb://{tmp_path / 'store'}")
    (tmp_path / "t.json").write_text("{}")
    assert main(["verify", "--truth", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "socialroi: the store has no socialroi schema yet: run `socialroi migrate` first ("
    ), err
    assert err.count("\n") == 1


def test_a_csv_without_an_event_type_header_is_one_bad_line() -> None:
    from pipeline.contract import Contract
    from pipeline.files import BadLine, read_events

    no_header = "c-1,like,2026-12-01T00:00:00Z\nc-2,like,2026-12-01T00:00:01Z\n"
    contract = Contract(max_message_bytes=65536, max_future_skew_ms=300_000)
    found = list(read_events("events.csv", no_header, contract, 0))
    assert len(found) == 1 and isinstance(found[0], BadLine)
    assert (found[0].line, found[0].reason) == (1, "missing_header")
    assert "with event_type among them" in found[0].detail
    assert "c-1,like,2026-12-01T00:00:00Z" in found[0].detail


@pytest.mark.parametrize(
    ("servers", "local"), [("127.0.0.1:19092", True), ("kafka.prod.example:9092", False)]
)
def test_kafka_hints_name_the_local_script_only_for_the_local_default(
    servers: str, local: bool
) -> None:
    from pipeline.settings import KafkaSettings
    from streams.producer import _unreachable

    settings = Settings.model_construct(kafka=KafkaSettings(bootstrap_servers=servers))
    message = str(_unreachable(settings, ConnectionRefusedError()))
    assert message.startswith(f"cannot reach Kafka at {servers} (ConnectionRefusedError); ")
    assert ("deploy/local/kafka.sh" in message) is local


def _report_rows() -> list[dict[str, object]]:
    """Two campaigns as the views give them: counts, money in base units, ratios."""
    from sinks.views import REPORT_COLUMNS

    row: dict[str, object] = {name: 48_213 for name in REPORT_COLUMNS}
    row.update(
        campaign_id="summer-sale-2026", windows=14, conversions=312.5, spend=123_456.78,
        revenue=98_765.43, profit=40_120.0, service_savings=1_840.0, roi=-0.1852,
        roas=0.8, cpa=395.06, cpc=2.56, cpm=2_560.5, cost_per_engagement=2.56,
        engagement_rate=0.0461, ctr=0.0123, conversion_rate=0.0065,
    )  # fmt: skip
    return [row, {**row, "campaign_id": ""}]


@pytest.mark.parametrize("width", [80, 120, 160])
def test_the_report_table_fits_the_terminal_with_roi_and_money_first(width: int) -> None:
    from sinks.views import REPORT_COLUMNS
    from streams.cli import table_columns
    from streams.present.report import render

    rows = _report_rows()
    columns = table_columns(width, rows)
    assert {"campaign_id", "spend", "revenue", "roi", "roas"} <= set(columns)
    assert columns == tuple(c for c in REPORT_COLUMNS if c in columns)  # in report order
    assert columns[0] == "campaign_id" and len(columns) < len(REPORT_COLUMNS)
    text = render(rows, columns, "table", "Campaign ROI")
    assert max(len(line) for line in text.splitlines()) <= width, text
    assert "summer-sale-2026" in text and "(none)" in text
    assert len(table_columns(width + 100, rows)) > len(columns)  # wider shows more


def test_report_columns_must_be_known(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    _clear_socialroi_env(monkeypatch)
    with pytest.raises(SystemExit) as exited:
        main(["report", "--columns", "campaign_id,popularity"])
    assert exited.value.code == 2
    assert "unknown column popularity; choose among campaign_id, campaign_name, windows" in (
        capsys.readouterr().err
    )
