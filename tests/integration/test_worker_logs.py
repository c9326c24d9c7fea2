"""What the worker's log shows, on a broker of the test's own that it stops and restarts.

A healthy worker logs no WARNING or ERROR, even past Faust's stream-inactivity threshold
(set down to 2 s here, through Faust's own environment variables): Faust's checks of its
paused fetching fire and are dropped, and the metrics count them. A broker outage is a
few dozen lines: each distinct failure once, a summary per interval, a recovered line;
the metrics count the repeats the log no longer shows.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import CompletedProcess

import pytest

pytestmark = pytest.mark.integration
Run = Callable[..., CompletedProcess[str]]
ROOT = Path(__file__).resolve().parents[2]
KAFKA_SH = ROOT / "deploy/local/kafka.sh"
LOUD = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) ", re.MULTILINE)
OUTAGE_SECONDS = 35
SUMMARY_SECONDS = 15


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateBroker:
    """A KRaft broker of deploy/local/kafka.sh with its own state dir and ports."""

    def __init__(self, root: Path) -> None:
        self.port = _free_port()
        self.env = {
            **os.environ,
            "SOCIALROI_STATE_DIR": str(root),
            "SOCIALROI_KAFKA_PORT": str(self.port),
            "SOCIALROI_KAFKA_CONTROLLER_PORT": str(_free_port()),
            "SOCIALROI_KAFKA_SASL_PORT": str(_free_port()),
            "SOCIALROI_KAFKA_HEAP": "-Xmx256m -Xms128m",
        }

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self, command: str) -> None:
        result = subprocess.run(
            ["bash", str(KAFKA_SH), command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if result.returncode != 0:
            pytest.fail(f"kafka.sh {command} failed:\n{result.stderr[-3000:]}", pytrace=False)

    def start(self) -> None:
        self._run("start")

    def stop(self) -> None:
        self._run("stop")


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def metric(port: int, name: str) -> float:
    """The sum of a metric's samples on a worker's /metrics (0 when it has none yet)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))  # fmt: skip


def wait_for(what: str, check: Callable[[], bool], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass  # the metrics server is not up yet
        time.sleep(1)
    pytest.fail(f"{what} not seen in {timeout:.0f}s; log:\n{log.read_text()[-4000:]}")


@pytest.mark.timeout(420)
def test_healthy_then_broker_outage_log(
    socialroi: Run,
    pipeline_env: dict[str, str],
    fresh_server_url: str,
    private_broker: PrivateBroker,
    tmp_path: Path,
) -> None:
    metrics_port = _free_port()
    env = {
        **pipeline_env,
        "SOCIALROI_KAFKA__BOOTSTRAP_SERVERS": private_broker.bootstrap,
        "SOCIALROI_CLICKHOUSE__URL": fresh_server_url,
        "SOCIALROI_METRICS__PORT": str(metrics_port),
        "SOCIALROI_LOG__REPEAT_SUMMARY_SECONDS": str(SUMMARY_SECONDS),
        "SOCIALROI_LOG__REPEAT_QUIET_SECONDS": "5",
        # Faust's own settings: its checks would fire after 2 s instead of 5 minutes.
        "STREAM_PROCESSING_TIMEOUT": "2",
        "BROKER_COMMIT_LIVELOCK_SOFT_TIMEOUT": "2",
    }
    result = socialroi(env, "simulate", "--events", "2000", "--seed", "5", "--truth",
                       str(tmp_path / "truth.json"))  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env,
                                  stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)  # fmt: skip
    try:
        # Healthy: past the threshold (Faust checks every 25 s), its checks fired and were
        # dropped, and nothing else was loud.
        wait_for(
            "Faust's fetch-path check",
            lambda: metric(metrics_port, "socialroi_log_silenced_total") > 0,
            90,
            log,
        )
        assert metric(metrics_port, "socialroi_sink_rows_written_total") > 0
        healthy = log.read_text()
        assert LOUD.findall(healthy) == [], healthy[-4000:]
        assert "Stream has not started processing" not in healthy

        # Outage.
        before = len(healthy.splitlines())
        private_broker.stop()
        time.sleep(OUTAGE_SECONDS)
        private_broker.start()

        def recovered() -> bool:
            # Readiness turns only if a lag read failed meanwhile (its requests time out
            # after about 40 s, the outage's length): then it must have turned back.
            after = "\n".join(log.read_text().splitlines()[before:])
            down = after.rfind("readiness: not ready")
            return "recovered: " in after and (down < 0 or after.rfind("readiness: ready") > down)

        wait_for("the recovery", recovered, 120, log)
        time.sleep(6)  # the quiet time of the last repeats, so their recovered lines are in
        assert worker.poll() is None, log.read_text()[-4000:]
        lines = log.read_text().splitlines()[before:]
        text = "\n".join(lines)
        suppressed = metric(metrics_port, "socialroi_log_repeats_suppressed_total")
        # aiokafka repeats "Unable connect to node" hundreds of times a second: once raw...
        assert sum("Unable connect to node" in line and "streams.logs" not in line
                   for line in lines) == 1, text  # fmt: skip
        # ...then a summary per interval while the broker is down, then recovered.
        summaries = [line for line in lines if "still failing: " in line]
        assert len(summaries) >= OUTAGE_SECONDS // SUMMARY_SECONDS, text
        assert any("Unable connect to node" in line for line in summaries), text
        assert re.search(r"recovered: not seen for \d+ s; repeated \d+ times from .* Unable "
                         r"connect to node", text), text  # fmt: skip
        assert len(lines) <= 40, f"{len(lines)} lines for a {OUTAGE_SECONDS} s outage:\n{text}"
        assert suppressed > 10 * len(lines), (suppressed, text)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
