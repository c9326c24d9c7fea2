"""Integration fixtures: the real Kafka broker and ClickHouse that deploy/local starts.

Every test gets fresh topics, a fresh consumer group (Faust app id) and a fresh database.
A service that cannot be reached fails the test with how to start it; nothing skips.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka.errors import KafkaError

from pipeline.settings import KafkaSettings, Settings
from streams.producer import KafkaUnavailable, delete_topics
from tests.integration.conftest_clickhouse import *  # noqa: F403 (fixtures)
from tests.integration.conftest_clickhouse import clickhouse_server_url  # noqa: F401

KAFKA = os.environ.get("SOCIALROI_TEST_KAFKA", "127.0.0.1:19092")
ROOT = Path(__file__).resolve().parents[2]
SOCIALROI = [sys.executable, "-m", "streams.cli"]


def _reachable(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    if not _reachable(KAFKA):
        pytest.fail(
            f"Kafka is not reachable at {KAFKA}: start it with "
            "`bash deploy/local/kafka.sh start` (or run `bash deploy/local/test.sh`)",
            pytrace=False,
        )
    return KAFKA


@pytest.fixture
def run_id() -> Iterator[str]:
    """A fresh name for the test's topics and group (``it-<run id>...``); its topics are
    deleted afterwards, so the broker's start-up time does not grow with every test run
    (thousands of leftover partitions made it miss the start script's 60 s)."""
    run = uuid.uuid4().hex[:10]
    yield run
    _delete_topics(f"it-{run}")


def _delete_topics(prefix: str) -> None:
    """Delete the shared broker's topics named ``prefix...``; best effort (a test that
    stopped the broker, or a deletion still in progress, leaves them to the next reset)."""
    if not _reachable(KAFKA):
        return
    with contextlib.suppress(KafkaError, KafkaUnavailable):
        delete_topics(Settings(kafka=KafkaSettings(bootstrap_servers=KAFKA)), prefix)


@pytest.fixture
def pipeline_env(kafka_bootstrap: str, run_id: str, tmp_path: Path) -> dict[str, str]:
    """Environment for `socialroi` subprocesses: fresh topics, group and worker state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCIALROI_")}
    env.update(
        {
            "SOCIALROI_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
            "SOCIALROI_WORKER__APP_ID": f"it-{run_id}",
            "SOCIALROI_WORKER__DATA_DIR": str(tmp_path / "worker"),
            "SOCIALROI_METRICS__PORT": "0",
            "SOCIALROI_TOPICS__SOCIAL": f"it-{run_id}.social",
            "SOCIALROI_TOPICS__WEB": f"it-{run_id}.web",
            "SOCIALROI_TOPICS__COSTS": f"it-{run_id}.costs",
            "SOCIALROI_TOPICS__CAMPAIGNS": f"it-{run_id}.meta",
            "SOCIALROI_TOPICS__DEAD_LETTERS": f"it-{run_id}.dead",
            "SOCIALROI_TOPICS__LATE": f"it-{run_id}.late",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


@pytest.fixture
def socialroi(tmp_path: Path) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    """Run the real CLI in a subprocess: socialroi(env, "verify", "--truth", path)."""

    def run(
        env: dict[str, str], *args: str, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SOCIALROI, *args],
            env=env,
            cwd=tmp_path,
            text=True,
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    yield run
