"""A private Prometheus server and promtool for tests: Debian's ``prometheus`` package.

Each test that needs one starts its own server on a free port, with its own config (scrape
every second), storage in the test's tmp dir and the project's alert rules loaded, so it
never depends on what the shared instance on 19090 scrapes. A missing binary fails the test
with how to install it; nothing skips.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

__all__ = ["ALERTS", "ALERTS_TEST", "PrivatePrometheus", "free_port", "http_get", "promtool"]

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
ALERTS_TEST = ROOT / "deploy/prometheus/alerts_test.yml"
HOW_TO_INSTALL = "install it with: bash deploy/local/prometheus.sh install"


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; {HOW_TO_INSTALL}", pytrace=False)
    return path


def promtool(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run promtool; fails the test (never skips) if it is missing."""
    return subprocess.run(
        [_binary("promtool"), *args],
        text=True,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    """(status, body) of a GET; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class PrivatePrometheus:
    """A Prometheus of the test's own that scrapes ``targets`` every second."""

    def __init__(self, root: Path, targets: list[str], job: str = "socialroi-worker") -> None:
        self.binary = _binary("prometheus")
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy(ALERTS, root / "alerts.yml")
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": ["alerts.yml"],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
        }
        # JSON is YAML: no YAML writer needed.
        self.config = root / "prometheus.yml"
        self.config.write_text(json.dumps(config, indent=2))
        self.log = root / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                pytest.fail(f"private prometheus exited; see {self.log}", pytrace=False)
            try:
                if http_get(f"{self.url}/-/ready", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"private prometheus not ready in {timeout}s; see {self.log}", pytrace=False)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query through the HTTP API; the result vector."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = http_get(url)
        data = json.loads(body)
        assert status == 200 and data["status"] == "success", f"{expr}: {status} {data}"
        return list(data["data"]["result"])

    def scalar(self, expr: str) -> float | None:
        """The single value of ``expr``, or None when the vector is empty."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} returned {len(result)} series"
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
