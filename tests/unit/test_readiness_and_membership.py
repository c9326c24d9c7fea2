"""``/readyz`` means progress, a worker is a static group member, and every topic the
pipeline creates says how it is kept. Readiness is driven through its own seam
(``streams.health.Progress``) with a fake worker and a fake clock."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from pipeline.settings import Settings, WorkerSettings
from streams.app import build_app
from streams.batch_io import app_table
from streams.health import Readiness
from streams.kafka_config import (
    CHANGELOG_TOPIC_CONFIG,
    REBALANCE_TIMEOUT_SECONDS,
    SESSION_TIMEOUT_SECONDS,
    group_instance_id,
)
from streams.metrics import Metrics, MetricsServer
from streams.producer import by_campaign_topic, topic_configs
from streams.run import _started
from tests.unit.health_fakes import FakeClock, FakeWorker


def _readiness(stall: float = 30.0) -> tuple[Readiness, FakeWorker, FakeClock]:
    worker, clock = FakeWorker(), FakeClock()
    worker.last_progress_at = clock.now
    return Readiness(worker, stall_seconds=stall, clock=clock), worker, clock


def test_not_ready_until_observed_and_when_stopping() -> None:
    ready, _, _ = _readiness()
    assert ready() == "starting"
    ready.observe(20, 0)
    assert ready() is None
    ready.stopping()
    assert ready() == "stopping"


def test_no_partition_recovery_rebalance_and_outage_are_not_ready() -> None:
    ready, worker, _ = _readiness()
    ready.observe(0, 0)
    assert ready() == "no partition assigned"
    ready.observe(None, None)  # the assignment is changing
    assert ready() is not None
    worker.is_settled = False  # rebalance or table recovery (the SIGTERM restart case)
    ready.observe(20, 0)
    assert ready() == "rebalance or table recovery under way"
    worker.is_settled, worker.sink.outage = True, True
    ready.observe(20, 0)
    assert ready() == "ClickHouse refuses writes"
    worker.sink.outage = False
    ready.observe(20, 0)
    assert ready() is None


def test_lag_without_progress_becomes_not_ready_after_the_stall_time() -> None:
    ready, worker, clock = _readiness(stall=30)
    clock.now += 3600  # idle for an hour: nothing to do is not a stall
    ready.observe(20, 0)
    assert ready() is None
    ready.observe(20, 500)  # messages arrive: ready while the worker has had time
    assert ready() is None
    clock.now += 29
    ready.observe(20, 500)
    assert ready() is None
    clock.now += 2
    ready.observe(20, 500)
    reason = ready()
    assert reason is not None and reason.startswith("500 messages waiting, none consumed for 31s")
    worker.last_progress_at = clock.now  # a batch took some
    ready.observe(20, 200)
    assert ready() is None
    clock.now += 31
    ready.observe(20, 200)
    assert ready() is not None
    ready.observe(20, 0)  # drained meanwhile (the last batch took the rest)
    assert ready() is None


def test_readyz_answers_503_with_the_reason() -> None:
    ready, _, _ = _readiness()
    server = MetricsServer(
        Metrics(CollectorRegistry()), "127.0.0.1", 0, not_ready=ready, not_alive=lambda: None
    )
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/readyz"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 503
        assert refused.value.read() == b"not ready: starting\n"
        ready.observe(4, 0)
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
    finally:
        server.stop()


def test_instance_id_is_stable_per_data_dir_and_valid_for_kafka(tmp_path: Path) -> None:
    a = WorkerSettings(data_dir=tmp_path / "a")
    assert group_instance_id(a) == group_instance_id(WorkerSettings(data_dir=tmp_path / "a"))
    assert group_instance_id(a) != group_instance_id(WorkerSettings(data_dir=tmp_path / "b"))
    assert all(c.isalnum() or c in "._-" for c in group_instance_id(a))
    assert group_instance_id(WorkerSettings(instance_id="worker-0")) == "worker-0"
    with pytest.raises(ValidationError):
        WorkerSettings(instance_id="two words")


def test_faust_app_is_a_static_member_with_short_session(tmp_path: Path) -> None:
    settings = Settings(worker=WorkerSettings(data_dir=tmp_path, instance_id="w-1"))
    conf = build_app(settings).conf
    assert conf.consumer_group_instance_id == "w-1"
    assert conf.broker_session_timeout == SESSION_TIMEOUT_SECONDS <= 15
    assert conf.broker_heartbeat_interval * 3 <= conf.broker_session_timeout
    assert conf.broker_rebalance_timeout == REBALANCE_TIMEOUT_SECONDS
    assert conf.broker_session_timeout <= conf.broker_request_timeout  # Faust refuses else


def test_every_table_changelog_is_compacted_and_streams_are_deleted(tmp_path: Path) -> None:
    settings = Settings(worker=WorkerSettings(data_dir=tmp_path))
    app = build_app(settings)
    table = app_table(app, settings.worker.app_id, "t", partitions=4)
    assert table.changelog_topic.config == CHANGELOG_TOPIC_CONFIG
    assert CHANGELOG_TOPIC_CONFIG["cleanup.policy"] == "compact"
    configs = topic_configs(settings)
    assert configs[by_campaign_topic(settings)] == {
        "cleanup.policy": "delete",
        "retention.ms": str(7 * 86400 * 1000),
    }
    assert {c["cleanup.policy"] for c in configs.values()} == {"delete"}
    assert settings.topics.social in configs and settings.topics.dead_letters in configs


class _SlowApp:
    """Stands in for a Faust app whose start waits for a long table recovery."""

    def __init__(self) -> None:
        self.cancelled = False

    async def start(self) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def test_a_stop_during_start_does_not_wait_for_the_start_to_finish() -> None:
    async def scenario() -> tuple[bool, float, bool]:
        app, stop = _SlowApp(), asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)  # the SIGTERM
        began = time.monotonic()
        started = await _started(app, stop)  # type: ignore[arg-type]
        return started, time.monotonic() - began, app.cancelled

    started, took, cancelled = asyncio.run(scenario())
    assert not started and cancelled and took < 1.0


def test_a_stage_in_its_own_process_has_its_own_group_and_the_same_changelog(
    tmp_path: Path,
) -> None:
    """Each stage's process is its own consumer group, but a table's changelog keeps the
    app id's name: state written by a process running both stages is the stage's state."""
    names = {}
    for stage in ("all", "ingest"):
        settings = Settings(worker=WorkerSettings(data_dir=tmp_path, app_id="roi", stage=stage))
        app = build_app(settings)
        table = app_table(app, settings.worker.app_id, "ingest-state", partitions=4)
        names[stage] = (app.conf.id, table.changelog_topic.get_topic_name())
    assert names == {
        "all": ("roi", "roi-ingest-state-changelog"),
        "ingest": ("roi-ingest", "roi-ingest-state-changelog"),
    }
