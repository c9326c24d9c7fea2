"""Fixtures for tests against real ClickHouse engines: the local 18.16 server and chDB.

The shared server comes from ``SOCIALROI_TEST_CLICKHOUSE_URL`` (default
``clickhouse://default@127.0.0.1:19000/socialroi_test``, what ``deploy/local/clickhouse.sh``
starts); every test gets a fresh database on it, dropped afterwards. If the server cannot be
reached the test fails (never skips) and says how to start it. ``private_clickhouse`` runs a
throw-away server on free ports for tests that must stop and restart one.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from clickhouse_driver import Client  # type: ignore[import-untyped]

from pipeline.settings import redact_url
from sinks.backends import Backend, open_backend

__all__ = [
    "PrivateClickHouse",
    "clickhouse_server_url",
    "engine_backend",
    "engine_url",
    "fresh_cluster_url",
    "fresh_server_url",
    "private_clickhouse",
    "server_url_with_database",
    "stopped_private_clickhouse",
]

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_URL = "clickhouse://default@127.0.0.1:19000/socialroi_test"
HOW_TO_START = "start it with: bash deploy/local/clickhouse.sh start"
# The cluster of deploy/local/clickhouse/cluster.xml: the shared server, replicated through
# the local ZooKeeper.
CLUSTER = "socialroi"


def server_url_with_database(url: str, database: str) -> str:
    """``url`` pointing at ``database`` instead of its own."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, ""))


def _driver_client(url: str) -> Client:
    parts = urlsplit(url)
    return Client(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 9000,
        user=parts.username or "default",
        password=parts.password or "",
        database="default",
        connect_timeout=5,
    )


@pytest.fixture(scope="session")
def clickhouse_server_url() -> str:
    """The shared test server's URL, after checking that it answers."""
    url = os.environ.get("SOCIALROI_TEST_CLICKHOUSE_URL", DEFAULT_URL)
    client = _driver_client(url)
    problem = None
    try:
        client.execute("SELECT 1")
    except Exception as exc:
        problem = str(exc)
    finally:
        client.disconnect()
    if problem is not None:
        pytest.fail(
            f"ClickHouse server {redact_url(url)} is not reachable ({problem}); {HOW_TO_START} "
            "(or point SOCIALROI_TEST_CLICKHOUSE_URL at a running server)",
            pytrace=False,
        )
    return url


def _drop_database(url: str, database: str, cluster: str | None = None) -> None:
    client = _driver_client(url)
    try:
        on_cluster = f" ON CLUSTER {cluster}" if cluster else ""
        client.execute(f"DROP DATABASE IF EXISTS {database}{on_cluster}")
    finally:
        client.disconnect()


@pytest.fixture
def fresh_server_url(clickhouse_server_url: str) -> Iterator[str]:
    """A URL to a database of its own on the shared server, dropped after the test."""
    database = f"socialroi_test_{secrets.token_hex(4)}"
    yield server_url_with_database(clickhouse_server_url, database)
    _drop_database(clickhouse_server_url, database)


@pytest.fixture
def fresh_cluster_url(clickhouse_server_url: str) -> Iterator[str]:
    """Like ``fresh_server_url``, with the replicated tables of ``?cluster=socialroi``."""
    client = _driver_client(clickhouse_server_url)
    try:
        client.execute("SELECT count() FROM system.zookeeper WHERE path = '/'")
    except Exception as exc:
        pytest.fail(
            f"the ClickHouse server has no ZooKeeper for cluster {CLUSTER} ({exc}); start "
            "both with: bash deploy/local/services.sh up",
            pytrace=False,
        )
    finally:
        client.disconnect()
    database = f"socialroi_test_{secrets.token_hex(4)}"
    url = server_url_with_database(clickhouse_server_url, database)
    yield f"{url}{'&' if '?' in url else '?'}cluster={CLUSTER}"
    _drop_database(clickhouse_server_url, database, CLUSTER)


@pytest.fixture(params=["chdb", "server", "cluster"])
def engine_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store on each engine in turn: chDB on disk, the server, and the
    server as a cluster (replicated tables behind Distributed ones)."""
    if request.param == "chdb":
        return f"chdb://{tmp_path / 'chdb'}"
    if request.param == "cluster":
        return str(request.getfixturevalue("fresh_cluster_url"))
    return str(request.getfixturevalue("fresh_server_url"))


@pytest.fixture
def engine_backend(engine_url: str) -> Iterator[Backend]:
    """A started backend on ``engine_url``, closed after the test (chDB needs that before
    another store can be opened in this process)."""
    backend = open_backend(engine_url)
    backend.start()
    try:
        yield backend
    finally:
        backend.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateClickHouse:
    """A ClickHouse server of the test's own, configured like deploy/local's, on free ports."""

    def __init__(self, root: Path) -> None:
        binary = shutil.which("clickhouse-server") or "/usr/sbin/clickhouse-server"
        if not os.access(binary, os.X_OK):
            pytest.fail(
                "clickhouse-server is not installed; install it with: "
                "bash deploy/local/clickhouse.sh install",
                pytrace=False,
            )
        self.binary = binary
        self.root = root
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None
        conf = root / "etc"
        data, logs = root / "data", root / "logs"
        for directory in (conf, data, logs):
            directory.mkdir(parents=True, exist_ok=True)
        template = (ROOT / "deploy/local/clickhouse/config.xml").read_text()
        for key, value in {
            "TCP_PORT": self.port,
            "DATA_DIR": data,
            "LOG_DIR": logs,
        }.items():
            template = template.replace(f"@{key}@", str(value))
        (conf / "config.xml").write_text(template)
        shutil.copy(ROOT / "deploy/local/clickhouse/users.xml", conf / "users.xml")
        self.config = conf / "config.xml"
        self.log = logs / "stdout.log"

    @property
    def url(self) -> str:
        return f"clickhouse://default@127.0.0.1:{self.port}/socialroi_private"

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it answers a query."""
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [self.binary, f"--config-file={self.config}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                pytest.fail(f"private clickhouse-server exited; see {self.log}", pytrace=False)
            client = Client(host="127.0.0.1", port=self.port, connect_timeout=1)
            try:
                client.execute("SELECT 1")
                return
            except Exception:
                time.sleep(0.2)
            finally:
                client.disconnect()
        self.kill()
        pytest.fail(
            f"private clickhouse-server did not answer in {timeout}s; see {self.log}", pytrace=False
        )

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL), as a crash or a pulled cable would."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.fixture
def stopped_private_clickhouse(tmp_path: Path) -> Iterator[PrivateClickHouse]:
    """A private server configured but not started (the test starts it), killed after."""
    server = PrivateClickHouse(tmp_path / "private-clickhouse")
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def private_clickhouse(stopped_private_clickhouse: PrivateClickHouse) -> PrivateClickHouse:
    """A started private server, killed after the test."""
    stopped_private_clickhouse.start()
    return stopped_private_clickhouse
