"""ClickHouse goes away for a minute in the middle of a run; the worker waits and resumes.

Real Kafka, the real worker as a subprocess, and a private ClickHouse 18.16 server that the
test kills (SIGKILL, as a crash or a pulled cable would) and starts again on the same data.
The worker must keep its batch, report not-ready on ``/readyz`` meanwhile, resume by itself
once the server answers, and the store must then equal the simulator's truth.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from clickhouse_driver import Client  # type: ignore[import-untyped]

from tests.integration.conftest import SOCIALROI
from tests.integration.conftest_clickhouse import PrivateClickHouse

pytestmark = pytest.mark.integration

Run = Callable[..., CompletedProcess[str]]
OUTAGE_SECONDS = 60


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _kpi_rows_written(server: PrivateClickHouse) -> int:
    client = Client(host="127.0.0.1", port=server.port, connect_timeout=2)
    try:
        rows = client.execute(
            "SELECT count() FROM system.tables "
            "WHERE database = 'socialroi_private' AND name = 'kpi_panes'"
        )
        if not rows[0][0]:
            return 0
        return int(client.execute("SELECT count() FROM socialroi_private.kpi_panes")[0][0])
    except Exception:
        return 0
    finally:
        client.disconnect()


def _readyz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def _wait(condition: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}; the worker's log ends:\n"
        + log.read_text()[-3000:]
    )


def test_worker_survives_a_one_minute_clickhouse_outage(
    socialroi: Run,
    pipeline_env: dict[str, str],
    private_clickhouse: PrivateClickHouse,
    tmp_path: Path,
) -> None:
    metrics_port = _free_port()
    env = {
        **pipeline_env,
        "SOCIALROI_CLICKHOUSE__URL": private_clickhouse.url,
        "SOCIALROI_METRICS__PORT": str(metrics_port),
        # Short back-off cap so the worker notices the server's return within seconds.
        "SOCIALROI_CLICKHOUSE__RETRY_MAX_SECONDS": "5",
    }
    truth = tmp_path / "truth.json"
    worker_log = tmp_path / "worker.log"
    with worker_log.open("wb") as log:
        worker = subprocess.Popen(
            [*SOCIALROI, "worker", "--stop-when-idle", "20"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    simulator = subprocess.Popen(
        [*SOCIALROI, "simulate", "--events", "100000", "--seed", "5", "--truth", str(truth)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    statuses: list[int | None] = []
    try:
        _wait(
            lambda: _readyz(metrics_port) == 200,
            120,
            "the worker's /readyz to answer 200",
            worker_log,
        )
        _wait(lambda: _kpi_rows_written(private_clickhouse) > 0, 180, "first KPI rows", worker_log)
        assert worker.poll() is None, worker_log.read_text()[-3000:]

        private_clickhouse.kill()
        outage_began = time.monotonic()
        while time.monotonic() - outage_began < OUTAGE_SECONDS:
            statuses.append(_readyz(metrics_port))
            time.sleep(1)
        assert worker.poll() is None, (
            "the worker exited during the outage:\n" + worker_log.read_text()[-3000:]
        )
        private_clickhouse.start()
        restarted = time.monotonic()

        sim_out, _ = simulator.communicate(timeout=600)
        assert simulator.returncode == 0, sim_out
        assert "sent 100000 messages" in sim_out
        _wait(lambda: _readyz(metrics_port) == 200, 120, "/readyz to answer 200 again", worker_log)
        resumed_after = time.monotonic() - restarted
        assert worker.wait(timeout=900) == 0, worker_log.read_text()[-3000:]
    finally:
        for process in (simulator, worker):
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)

    # Not ready during the outage, once a write had been attempted and refused.
    assert 503 in statuses, statuses
    not_ready = statuses.index(503)
    print(
        f"outage: /readyz 503 after {not_ready}s, for {statuses.count(503)} of "
        f"{len(statuses)} probes; ready again {resumed_after:.1f}s after the restart"
    )
    log_text = worker_log.read_text()
    assert "ClickHouse unavailable, retrying" in log_text
    assert "ClickHouse writes resumed" in log_text
    # The idle timer must not run while writes are refused: the worker stops only after.
    assert log_text.index("idle for") > log_text.rindex("ClickHouse writes resumed")
    assert " ERROR " not in log_text and "worker crashed" not in log_text, log_text[-3000:]
    assert "Traceback" not in log_text, log_text[-3000:]
    result = socialroi(env, "verify", "--truth", str(truth))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ClickHouse equals the truth" in result.stdout
