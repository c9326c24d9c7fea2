"""deploy/local/lib.sh's service start, status and stop, which the four service scripts
share, driven through a fake service (a Python process in a private state dir)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[2] / "deploy" / "local" / "lib.sh"
SCRIPT = """\
set -euo pipefail
. "$FAKE_LIB"
SERVICE=fake
PIDFILE=$STATE_DIR/fake/fake.pid
ADDRESS=fake-address
LOG_DIR=$STATE_DIR/fake/logs
PORTS=("$FAKE_PORT")
PORT_SETTINGS=FAKE_PORT
SERVICE_LOGS=("$LOG_DIR/fake.log:5")
answers() { [[ -f $STATE_DIR/ready ]]; }
launch() {
    log fake "launching"
    spawn "$PIDFILE" "$LOG_DIR/fake.log" "$FAKE_PYTHON" -c "$FAKE_SERVER" "$STATE_DIR"
}
cmd_start() {
    service_start 10
    echo "was up: $SERVICE_WAS_UP"
}
cmd_status() { service_status; }
cmd_stop() { service_stop; }
dispatch usage "$@"
"""
# Prints, becomes ready after a moment, serves until SIGTERM; its argument (the state
# dir) is in its command line, as pid_alive requires.
SERVES = (
    "import pathlib, sys, time\n"
    "print('serving', flush=True)\n"
    "time.sleep(0.5)\n"
    "(pathlib.Path(sys.argv[1]) / 'ready').touch()\n"
    "time.sleep(120)\n"
)
DIES = "import sys; print('config is broken', flush=True); sys.exit(3)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Fake:
    def __init__(self, tmp_path: Path, server: str) -> None:
        self.script = tmp_path / "fake.sh"
        self.script.write_text(SCRIPT)
        self.state = tmp_path / "state"
        self.port = free_port()
        self.server = server

    def run(self, action: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "SOCIALROI_STATE_DIR": str(self.state),
            "FAKE_LIB": str(LIB),
            "FAKE_PORT": str(self.port),
            "FAKE_PYTHON": sys.executable,
            "FAKE_SERVER": self.server,
        }
        return subprocess.run(
            ["bash", str(self.script), action], env=env, capture_output=True, text=True, timeout=60
        )

    def pid(self) -> int:
        return int((self.state / "fake" / "fake.pid").read_text())


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Fake]:
    service = Fake(tmp_path, SERVES)
    yield service
    service.run("stop")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_launches_waits_until_it_answers_and_a_second_start_changes_nothing(
    fake: Fake,
) -> None:
    assert fake.run("status").returncode == 1
    first = fake.run("start")
    assert first.returncode == 0, first.stderr
    assert first.stdout == "was up: 0\n" and "launching" in first.stderr
    assert (fake.state / "ready").exists()  # it waited for the answer
    pid = fake.pid()

    again = fake.run("start")
    assert again.returncode == 0 and again.stdout == "was up: 1\n"
    assert f"already running (pid {pid}) on fake-address" in again.stderr
    assert "launching" not in again.stderr and fake.pid() == pid

    status = fake.run("status")
    assert status.returncode == 0 and f"up on fake-address (pid {pid})" in status.stderr

    assert fake.run("stop").returncode == 0
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)
    down = fake.run("status")
    assert down.returncode == 1 and "down" in down.stderr


def test_a_taken_port_is_refused_before_anything_starts(fake: Fake) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", fake.port))
        taken.listen()
        refused = fake.run("start")
    assert refused.returncode == 1
    assert f"port {fake.port} is taken by another process (set FAKE_PORT)" in refused.stderr
    assert "launching" not in refused.stderr


def test_a_service_that_dies_fails_the_start_at_once_with_its_log(tmp_path: Path) -> None:
    service = Fake(tmp_path, DIES)
    began = time.monotonic()
    failed = service.run("start")
    assert failed.returncode == 1
    assert time.monotonic() - began < 8  # not the whole 10 s timeout
    assert "config is broken" in failed.stderr  # the log's tail
    logs = service.state / "fake" / "logs"
    assert f"no answer on fake-address within 10s; see {logs}/, then: fake.sh stop and " in (
        failed.stderr
    )
