"""``/healthz`` means the process turns and, for a worker, that its batches move; the
collector's ``/readyz`` follows Kafka; each process exports its own metric families and
its process's. Driven through ``streams.health`` with a fake worker and a fake clock."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from streams.health import Liveness, ProduceReadiness
from streams.metrics import CollectorMetrics, Metrics, MetricsServer
from tests.unit.health_fakes import FakeClock, FakeWorker


def _liveness(timeout: float = 60) -> tuple[Liveness, FakeWorker, FakeClock]:
    worker, clock = FakeWorker(), FakeClock()
    worker.last_progress_at = clock.now
    return Liveness(timeout, worker, clock=clock), worker, clock


def test_a_loop_that_stops_turning_is_not_alive_after_the_timeout() -> None:
    alive, _, clock = _liveness(timeout=60)
    assert alive() is None
    clock.now += 60
    assert alive() is None
    clock.now += 1.5  # no beat for 61.5 s: a blocking call holds the loop
    assert alive() == "event loop has not turned for 62s"
    alive.beat()
    assert alive() is None


def test_an_idle_worker_stays_alive_however_long_nothing_comes() -> None:
    alive, _, clock = _liveness(timeout=60)
    for _ in range(10):
        clock.now += 3600
        alive.beat()
        alive.observe(0)
        assert alive() is None


def test_lag_with_no_batch_reaching_it_is_not_alive_after_the_timeout() -> None:
    alive, worker, clock = _liveness(timeout=60)
    clock.now += 3600  # idle for an hour first: the old progress time must not count
    alive.beat()
    alive.observe(500)
    assert alive() is None
    clock.now += 59
    alive.beat()
    alive.observe(500)
    assert alive() is None
    clock.now += 2
    alive.beat()
    assert alive() == "500 messages waiting, no batch reached any for 61s"
    worker.last_progress_at = clock.now  # a batch moved
    alive.observe(300)
    assert alive() is None


def test_a_clickhouse_outage_does_not_count_as_stuck() -> None:
    alive, worker, clock = _liveness(timeout=60)
    alive.observe(500)
    worker.sink.outage = True  # back-pressure: readiness says so; a restart would not help
    for _ in range(20):
        clock.now += 30
        alive.beat()
        alive.observe(500)
        assert alive() is None
    worker.sink.outage = False  # back: the count starts again from here
    alive.observe(500)
    clock.now += 30
    alive.beat()
    assert alive() is None
    clock.now += 31
    alive.beat()
    assert alive() is not None


def test_a_rebalance_that_never_ends_counts_and_keeps_the_last_lag() -> None:
    """A rebalance waits for the batch under way: a hung batch shows as a rebalance that
    does not end, while the lag is not measured (``None``)."""
    alive, worker, clock = _liveness(timeout=60)
    alive.observe(500)
    worker.is_settled = False
    for _ in range(6):
        clock.now += 10
        alive.beat()
        alive.observe(None)
    assert alive() is None
    clock.now += 1
    alive.beat()
    alive.observe(None)
    assert alive() == "500 messages waiting, no batch reached any for 61s"
    alive.observe(0)  # measured again: nothing waits
    assert alive() is None


def test_healthz_answers_503_with_the_reason() -> None:
    alive, _, clock = _liveness(timeout=5)
    server = MetricsServer(
        Metrics(CollectorRegistry()), "127.0.0.1", 0, not_ready=lambda: None, not_alive=alive
    )
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
        clock.now += 6
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 503
        assert refused.value.read() == b"not alive: event loop has not turned for 6s\n"
    finally:
        server.stop()


def test_the_heartbeat_runs_on_the_loop_until_stopped() -> None:
    clock = FakeClock()
    alive = Liveness(5, clock=clock)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(alive.run(stop, interval=0.01))
        clock.now += 100
        await asyncio.sleep(0.05)
        assert alive() is None  # the task beat after the clock moved
        stop.set()
        await asyncio.wait_for(task, 1)

    asyncio.run(main())


def test_collector_readiness_follows_kafka_and_probes_while_refused() -> None:
    answers = [False, True]
    probes: list[bool] = []

    def probe() -> bool:
        probes.append(answers[len(probes)])
        return probes[-1]

    ready = ProduceReadiness(probe, interval=0.01)
    assert ready() == "starting"
    ready.started()
    assert ready() is None
    ready.refused("KafkaTimeoutError")
    assert ready() == "Kafka refused events (KafkaTimeoutError)"
    ready.acknowledged()
    assert ready() is None
    ready.refused("KafkaTimeoutError")

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(ready.run(stop))
        for _ in range(200):
            if ready() is None:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 1)

    asyncio.run(main())
    assert probes == [False, True]  # not ready after the first probe, ready after the second
    assert ready() is None
    ready.stopping()
    ready.acknowledged()  # a request finishing during shutdown does not make it ready
    assert ready() == "stopping"


def _families(registry: CollectorRegistry) -> set[str]:
    return {family.name for family in registry.collect()}


def test_worker_and_collector_export_process_and_gc_metrics() -> None:
    for metrics in (Metrics(CollectorRegistry()), CollectorMetrics(CollectorRegistry())):
        text = generate_latest(metrics.registry).decode()
        for name in (
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "python_gc_objects_collected_total",
            "python_info",
        ):
            assert f"\n{name}" in text, f"{type(metrics).__name__}: {name}"


def test_the_collector_exports_only_its_own_families() -> None:
    collector = _families(CollectorMetrics(CollectorRegistry()).registry)
    worker = _families(Metrics(CollectorRegistry()).registry)
    ours = {name for name in collector if name.startswith("socialroi_")}
    assert ours == {
        "socialroi_events_produced",
        "socialroi_dead_letters",
        "socialroi_build_info",
        # what the process's log filters kept out (streams.logs): the collector's own
        "socialroi_log_repeats_suppressed",
        "socialroi_log_silenced",
    }
    assert ours < worker  # the same names, so the alerts and panels read both
    text = generate_latest(CollectorMetrics(CollectorRegistry()).registry).decode()
    for name in ("socialroi_batch_seconds", "socialroi_sink_outage", "socialroi_consumer_lag"):
        assert name not in text
    # what each process is, for rules and panels that must not depend on the job's name
    assert 'socialroi_build_info{component="collector",version="' in text
    worker_text = generate_latest(Metrics(CollectorRegistry()).registry).decode()
    assert 'socialroi_build_info{component="worker",version="' in worker_text


def test_a_batch_under_way_too_long_is_not_alive_unless_clickhouse_is_down() -> None:
    """A hung batch has moved the live state past its offsets, so the lag reads 0: the
    batch's age is what shows it."""
    alive, worker, clock = _liveness(timeout=60)
    worker.batch_since = clock.now
    clock.now += 59
    alive.beat()
    alive.observe(0)
    assert alive() is None
    clock.now += 2
    alive.beat()
    assert alive() == "a batch has been under way for 61s"
    worker.sink.outage = True  # waiting for ClickHouse to come back: it resumes by itself
    assert alive() is None
    worker.sink.outage = False
    worker.batch_since = None  # the batch ended
    assert alive() is None
