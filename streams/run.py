"""Long-running entry points: the worker, the collector, and verification.

Part of the composition root with ``streams.cli``: these wire Kafka to ClickHouse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

import faust
import orjson
from aiohttp import web
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from pipeline.ports import SnapshotSink
from pipeline.settings import Settings
from pipeline.verify import (
    REACH_TOLERANCE,
    compare_campaigns,
    compare_credits,
    compare_dead_letters,
    compare_skipped,
    compare_windows,
)
from sinks import (
    ClickHouseSink,
    connected,
    credited_rows,
    dead_letter_counts,
    kpi_rows,
    skipped_daily,
)
from sinks.views import campaigns
from streams.collector import build_collector
from streams.health import Liveness, ProduceReadiness, Readiness
from streams.metrics import CollectorMetrics, Metrics, MetricsServer
from streams.present.progress import Reporter
from streams.producer import (
    EventProducer,
    check_changelogs,
    ensure_topics,
    kafka_reachable,
    topic_for_kind,
)
from streams.worker import Worker

__all__ = [
    "ConsumerMetrics",
    "run_collector",
    "run_worker",
    "verify",
    "worker_main",
]

log = logging.getLogger(__name__)

# How often the worker's consumer position is turned into lag and rebalance metrics.
CONSUMER_METRICS_INTERVAL_SECONDS = 1.0


class ConsumerMetrics:
    """Lag per assigned partition and the rebalance count, read from the Faust app.

    Lag is the partition's log end offset (``ends``, asked of the broker: Faust's consumer
    does not fetch the partitions the worker reads itself, so its high-water marks stand
    still) minus the first offset whose effect the worker's state has not recorded
    (``done``), i.e. messages not yet processed for good. Faust's committed offset is not
    used: it can stay behind a message Faust skipped long after the worker processed it.
    Until the state has seen a partition, the consumer's fetch position stands in. Only
    ``topics`` (the ones the agents consume: ingest topics and the repartition topic) are
    reported; table changelogs and the assignor's topic are not consumer lag. Partitions
    that are revoked lose their series, so a gauge never reports stale lag.
    """

    def __init__(
        self,
        app: faust.App,
        metrics: Metrics,
        topics: Iterable[str],
        done: Callable[[str, int], int | None],
        ends: Callable[[list[tuple[str, int]]], Awaitable[dict[tuple[str, int], int]]],
        readiness: Readiness | None = None,
        liveness: Liveness | None = None,
    ) -> None:
        self._app = app
        self._metrics = metrics
        self._topics = frozenset(topics)
        self._done = done
        self._ends = ends
        self._readiness = readiness
        self._liveness = liveness
        self._rebalances_seen = 0
        self._labelled: set[tuple[str, str]] = set()

    async def update(self) -> None:
        app, metrics = self._app, self._metrics
        count = app.rebalancing_count
        if count > self._rebalances_seen:
            metrics.rebalances.inc(count - self._rebalances_seen)
            self._rebalances_seen = count
        if app.rebalancing:
            # The assignment is changing; keep the last values until it settles.
            self._observe(None, None)
            return
        consumer = app.consumer
        labelled: set[tuple[str, str]] = set()
        assigned = sorted(tp for tp in consumer.assignment() if tp.topic in self._topics)
        ends = await self._ends([(tp.topic, tp.partition) for tp in assigned])
        total = 0
        for tp in assigned:
            end = ends.get((tp.topic, tp.partition))
            done = self._done(tp.topic, tp.partition)
            if done is None:
                done = await consumer.position(tp)
            if end is None or done is None:
                continue
            labels = (tp.topic, str(tp.partition))
            metrics.consumer_lag.labels(*labels).set(max(end - done, 0))
            total += max(end - done, 0)
            labelled.add(labels)
        for labels in self._labelled - labelled:
            with contextlib.suppress(KeyError):
                metrics.consumer_lag.remove(*labels)
        self._labelled = labelled
        metrics.assigned_partitions.set(len(assigned))
        self._observe(len(assigned), total)

    def _observe(self, assigned: int | None, lag: int | None) -> None:
        if self._readiness is not None:
            self._readiness.observe(assigned, lag)
        if self._liveness is not None:
            self._liveness.observe(lag)

    async def run(self, stop: asyncio.Event) -> None:
        """Update every interval until ``stop`` is set; errors are logged, never raised."""
        while not stop.is_set():
            try:
                await self.update()
            except KafkaError as exc:
                # Expected while the broker is away: one line (repeats are summarised).
                log.warning("could not read consumer lag: %s", exc)
                self._observe(None, None)
            except Exception:
                log.warning("could not read consumer lag", exc_info=True)
                self._observe(None, None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=CONSUMER_METRICS_INTERVAL_SECONDS)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def worker_main(
    settings: Settings,
    stop: asyncio.Event,
    stop_when_idle: float | None = None,
    *,
    metrics: Metrics | None = None,
    sink: SnapshotSink | None = None,
) -> Worker:
    """Run a worker until ``stop`` is set (or it was idle that long); returns it.

    ``metrics`` and ``sink`` default to fresh ones (a new registry; ClickHouse from the
    settings); the demo passes its own to watch progress while the worker runs."""
    settings.worker.data_dir.mkdir(parents=True, exist_ok=True)
    metrics = metrics if metrics is not None else Metrics(CollectorRegistry())
    sink = sink if sink is not None else ClickHouseSink(settings.clickhouse)
    await sink.start()
    worker = Worker(settings, sink, metrics)
    try:
        # Faust creates missing changelogs compacted, but keeps an existing one as it is.
        await asyncio.to_thread(check_changelogs, settings, worker.app.tables.changelog_topics)
    except BaseException:
        await sink.close()
        raise
    readiness = Readiness(worker)
    liveness = Liveness(settings.metrics.liveness_seconds, worker)
    server = None
    if settings.metrics.port:
        server = MetricsServer(
            metrics,
            settings.metrics.host,
            settings.metrics.port,
            not_ready=readiness,
            not_alive=liveness,
        )
        server.start()
    app = worker.app
    metrics_stop = asyncio.Event()
    metrics_task: asyncio.Task[None] | None = None
    # The loop's heartbeat starts before the app: a start that blocks the loop counts.
    heartbeat = asyncio.create_task(liveness.run(metrics_stop))
    feeds: list[asyncio.Task[None]] = []
    try:
        if not await _started(app, stop):
            log.info("stopping: asked to stop while starting")
            return worker
        feeds = worker.start_feeds()
        # Lag is reported for what the agents consume, not for table changelogs.
        consumer_metrics = ConsumerMetrics(
            app,
            metrics,
            worker.consumed_topics,
            worker.next_unseen,
            worker.direct.ends,
            readiness,
            liveness,
        )
        metrics_task = asyncio.create_task(consumer_metrics.run(metrics_stop))
        drained_since: float | None = None
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
            if app.should_stop or app.crash_reason is not None:
                break
            await worker.beat()
            if stop_when_idle is None:
                continue
            # Idle means drained: the state has seen every message of the assigned
            # partitions, no rebalance or recovery is under way, ClickHouse takes writes, and
            # no batch brought anything new for that long. Time spent recovering state or
            # waiting on ClickHouse is not idle.
            now = time.monotonic()
            if now - worker.last_progress_at <= stop_when_idle or not await worker.drained():
                drained_since = None
            elif drained_since is None:
                drained_since = now
            elif now - drained_since > stop_when_idle:
                log.info(
                    "drained and idle for %.0fs after %d batches, stopping",
                    stop_when_idle,
                    worker.batches_done,
                )
                break
        if app.crash_reason is not None:
            raise RuntimeError(f"worker crashed: {app.crash_reason!r}")
    finally:
        metrics_stop.set()
        if metrics_task is not None:
            await metrics_task
        await heartbeat
        readiness.stopping()
        await worker.stop_feeds(feeds)
        await app.stop()
        await worker.direct.stop()
        await sink.close()
        if server is not None:
            server.stop()
    return worker


async def _started(app: faust.App, stop: asyncio.Event) -> bool:
    """Start the app; ``False`` if ``stop`` was set first. Faust's start returns only once
    the first table recovery is over (a whole changelog, with in-memory tables), and a
    SIGTERM meanwhile waited for it: the start is cancelled instead, and the caller's
    ``app.stop()`` stops what had started."""
    starting = asyncio.ensure_future(app.start())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if starting.done():
        starting.result()  # a failed start raises here
        return not stop.is_set()
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await starting
    return False


def _consumed_and_waiting(metrics: Metrics) -> tuple[int, int]:
    """Messages the ingest stage consumed so far, and the lag of the assigned partitions."""
    consumed = waiting = 0
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "socialroi_events_consumed_total":
                consumed += int(sample.value) if sample.labels.get("stage") == "ingest" else 0
            elif sample.name == "socialroi_consumer_lag":
                waiting += int(sample.value)
    return consumed, waiting


async def _report_progress(metrics: Metrics, stop: asyncio.Event) -> None:
    """The worker's progress (consumed, rate, lag, ETA) until ``stop`` is set."""
    reporter = Reporter("worker", "messages consumed", every=60.0)
    try:
        while not stop.is_set():
            reporter.update(*_consumed_and_waiting(metrics))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
    finally:
        reporter.close()


def run_worker(settings: Settings, stop_when_idle: float | None = None) -> None:
    ensure_topics(settings)

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        metrics = Metrics(CollectorRegistry())
        done = asyncio.Event()
        progress = asyncio.create_task(_report_progress(metrics, done))
        try:
            await worker_main(settings, stop, stop_when_idle, metrics=metrics)
        finally:
            done.set()
            await progress

    asyncio.run(main())


def run_collector(settings: Settings) -> None:
    """Serve the collector until SIGINT/SIGTERM."""
    ensure_topics(settings)
    metrics = CollectorMetrics(CollectorRegistry())
    readiness = ProduceReadiness(lambda: kafka_reachable(settings))
    liveness = Liveness(settings.metrics.liveness_seconds)
    producer = EventProducer(settings, client_id="socialroi-collector")
    producer.start()
    app = build_collector(settings, producer, metrics, readiness)

    async def watched(_: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(liveness.run(stop)), asyncio.create_task(readiness.run(stop))]
        readiness.started()
        yield
        readiness.stopping()
        stop.set()
        await asyncio.gather(*tasks)

    app.cleanup_ctx.append(watched)
    server = None
    if settings.metrics.port:
        server = MetricsServer(
            metrics,
            settings.metrics.host,
            settings.metrics.port,
            not_ready=readiness,
            not_alive=liveness,
        )
        server.start()
    try:
        web.run_app(
            app,
            host=settings.collector.host,
            port=settings.collector.port,
            print=lambda *_: log.info(
                "collector listening on %s:%d", settings.collector.host, settings.collector.port
            ),
        )
    finally:
        producer.close()
        if server is not None:
            server.stop()


def verify(settings: Settings, truth_path: Path) -> int:
    """Exit code 0 when ClickHouse equals the truth; prints a readable diff otherwise."""
    truth = orjson.loads(truth_path.read_bytes())
    with connected(settings.clickhouse.url.get_secret_value()) as backend:
        rows = kpi_rows(backend)
        dead = dead_letter_counts(backend)
        credits = credited_rows(backend)
        declared = campaigns(backend)
        skipped = skipped_daily(backend)
    diffs = compare_windows(truth, rows)
    diffs += compare_dead_letters(truth["dead_letters"], dead)
    kinds = {topic: kind for kind, topic in topic_for_kind(settings).items()}
    diffs += compare_skipped(truth["skipped"], skipped, kinds)
    diffs += compare_credits(truth["credited"], credits)
    diffs += compare_campaigns(truth.get("campaigns", {}), declared)
    if diffs:
        print(f"verify: {len(diffs)} differences between ClickHouse and {truth_path}:")
        for diff in diffs[:50]:
            print(f"  {diff}")
        if len(diffs) > 50:
            print(f"  ... and {len(diffs) - 50} more")
        return 1
    finals = sum(1 for w in truth["windows"] if w[5])
    print(
        f"verify: ClickHouse equals the truth: {len(truth['windows'])} windows "
        f"({finals} final) x {len(truth['counters'])} KPI inputs, "
        f"{sum(len(v) for v in truth['credited'].values())} credited rows over "
        f"{len(truth['credited'])} attribution models, "
        f"{sum(truth['dead_letters'].values())} dead letters, "
        f"{truth['late']} late and {truth['duplicates']} duplicate events, "
        f"{len(declared)} declared campaigns "
        f"(reach within {REACH_TOLERANCE:.1%})"
    )
    return 0
