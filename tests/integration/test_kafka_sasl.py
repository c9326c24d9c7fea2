"""SASL/SCRAM-SHA-256 against the real broker's second listener, and secrets never printed.

deploy/local/kafka.sh runs a SASL_PLAINTEXT listener on 127.0.0.1:19094 with user
``socialroi``, whose local test password it generates into the state dir
(``kafka.sh scram-password`` prints it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.integration.conftest import ROOT, SOCIALROI, _reachable
from tests.integration.prometheus_helpers import free_port, http_get

pytestmark = pytest.mark.integration

Run = Callable[..., subprocess.CompletedProcess[str]]
SASL = os.environ.get("SOCIALROI_TEST_KAFKA_SASL", "127.0.0.1:19094")
RESTART = "bash deploy/local/kafka.sh stop && bash deploy/local/kafka.sh start"


@pytest.fixture(scope="session")
def scram_password() -> str:
    state = Path(os.environ.get("SOCIALROI_STATE_DIR", ROOT / ".local"))
    path = state / "kafka/scram-socialroi.password"
    if not _reachable(SASL) or not path.is_file():
        pytest.fail(
            f"the broker's SASL/SCRAM listener {SASL} is not up (or {path} is missing): "
            f"start it with `bash deploy/local/kafka.sh start` (a broker started before the "
            f"listener existed needs: {RESTART})",
            pytrace=False,
        )
    return path.read_text().strip()


def _sasl_env(pipeline_env: dict[str, str], password: str) -> dict[str, str]:
    return {
        **pipeline_env,
        "SOCIALROI_KAFKA__BOOTSTRAP_SERVERS": SASL,
        "SOCIALROI_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "SOCIALROI_KAFKA__SASL_MECHANISM": "SCRAM-SHA-256",
        "SOCIALROI_KAFKA__SASL_USERNAME": "socialroi",
        "SOCIALROI_KAFKA__SASL_PASSWORD": password,
    }


def test_producer_and_worker_over_sasl_scram_equal_the_truth(
    socialroi: Run,
    pipeline_env: dict[str, str],
    scram_password: str,
    fresh_server_url: str,
    tmp_path: Path,
) -> None:
    env = {**_sasl_env(pipeline_env, scram_password), "SOCIALROI_CLICKHOUSE__URL": fresh_server_url}
    truth = tmp_path / "t.json"
    out = socialroi(env, "simulate", "--events", "2000", "--seed", "3", "--truth", str(truth))
    assert out.returncode == 0, out.stdout + out.stderr
    assert scram_password not in out.stdout + out.stderr

    port = free_port()
    log = tmp_path / "worker.log"
    with log.open("w") as sink:
        worker = subprocess.Popen(
            [*SOCIALROI, "worker"],
            env={**env, "SOCIALROI_METRICS__PORT": str(port)},
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        consumed = 0.0
        while time.monotonic() < deadline and consumed < 2000:
            assert worker.poll() is None, log.read_text()[-3000:]
            try:
                status, body = http_get(f"http://127.0.0.1:{port}/metrics", timeout=2)
            except OSError:
                time.sleep(0.5)
                continue
            consumed = sum(
                float(line.rsplit(" ", 1)[1])
                for line in body.decode().splitlines()
                if line.startswith("socialroi_events_consumed_total{") and 'stage="ingest"' in line
            )
            time.sleep(0.5)
        assert consumed == 2000, log.read_text()[-3000:]
        status, body = http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and scram_password.encode() not in body
        time.sleep(3)  # let the last aggregate batch reach ClickHouse
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=60)
    assert code == 0, log.read_text()[-3000:]
    assert scram_password not in log.read_text()
    result = socialroi(env, "verify", "--truth", str(truth))
    assert result.returncode == 0, result.stdout + result.stderr
    assert sum(orjson.loads(truth.read_bytes())["dead_letters"].values()) > 0


@pytest.mark.parametrize("command", ["simulate", "worker"])
def test_a_wrong_password_fails_clearly_without_printing_it(
    socialroi: Run,
    pipeline_env: dict[str, str],
    scram_password: str,
    tmp_path: Path,
    command: str,
) -> None:
    wrong = "Wr0ng-" + scram_password[::-1]
    env = _sasl_env(pipeline_env, wrong)
    args = {
        "simulate": ["simulate", "--events", "10", "--truth", str(tmp_path / "t.json")],
        "worker": ["worker", "--stop-when-idle", "5"],
    }[command]
    result = socialroi(env, *args, timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert wrong not in output and scram_password not in output
    # The broker answers a wrong password with an authentication error and closes the
    # connection; kafka-python reports whichever of the two it reads first, so the library's
    # own line varies. What must not vary is the CLI's last line, checked below.
    assert any(
        sign in output
        for sign in ("SaslAuthenticationFailed", "invalid credentials", "socket disconnected")
    ), output[-2000:]
    # the one line the CLI ends with names the cause and where to fix it
    assert "check the SASL credentials of user 'socialroi'" in output, output[-2000:]
    assert not (tmp_path / "t.json").exists()


def test_passwords_never_appear_in_help_or_config(
    socialroi: Run, pipeline_env: dict[str, str]
) -> None:
    secrets = {
        "SOCIALROI_KAFKA__SASL_PASSWORD": "kafka-Secret-1234",
        "SOCIALROI_CLICKHOUSE__URL": "clickhouse://ingest:ch-Secret-5678@127.0.0.1:19000/db",
        "SOCIALROI_COLLECTOR__TOKEN": "token-Secret-9012",
    }
    env = {**pipeline_env, **secrets}
    for args in (["--help"], ["worker", "--help"], ["config"]):
        result = socialroi(env, *args)
        assert result.returncode == 0, result.stderr
        output = result.stdout + result.stderr
        for value in ("kafka-Secret-1234", "ch-Secret-5678", "token-Secret-9012"):
            assert value not in output, f"{args}: {value} printed"
    config = orjson.loads(socialroi(env, "config").stdout)
    assert config["kafka"]["sasl_password"] == "***"
    assert config["collector"]["token"] == "***"
    assert config["clickhouse"]["url"] == "clickhouse://ingest:***@127.0.0.1:19000/db"
