"""Long-running entry points: the worker, the collector, and verification.

Part of the composition root with ``streams.cli``: these wire Kafka to ClickHouse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry

from pipeline.settings import Settings
from pipeline.verify import compare_dead_letters, compare_windows
from sinks import ClickHouseSink, dead_letter_counts, kpi_rows, open_backend
from streams.collector import build_collector
from streams.metrics import Metrics, MetricsServer
from streams.producer import EventProducer, ensure_topics
from streams.worker import Worker

__all__ = ["run_collector", "run_worker", "verify", "worker_main"]

log = logging.getLogger(__name__)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def worker_main(
    settings: Settings, stop: asyncio.Event, stop_when_idle: float | None = None
) -> Worker:
    """Run a worker until ``stop`` is set (or it was idle that long); returns it."""
    settings.worker.data_dir.mkdir(parents=True, exist_ok=True)
    metrics = Metrics(CollectorRegistry())
    sink = ClickHouseSink(settings.clickhouse)
    await sink.start()
    worker = Worker(settings, sink, metrics)
    server = None
    if settings.metrics.port:
        server = MetricsServer(
            metrics,
            settings.metrics.host,
            settings.metrics.port,
            ready=lambda: not worker.sink.outage,
        )
        server.start()
    app = worker.app
    try:
        await app.start()
        # Faust warns and stalls once 100 messages wait in its producer buffer; a batch
        # queues one changelog message per touched key, so allow a few batches' worth.
        app.producer.buffer.max_messages = 4 * settings.worker.batch_max_events
        started = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
            if app.should_stop or app.crash_reason is not None:
                break
            if stop_when_idle is not None:
                last = max(worker.last_batch_at, started)
                if time.monotonic() - last > stop_when_idle:
                    log.info(
                        "idle for %.0fs after %d batches, stopping", stop_when_idle, worker.batches
                    )
                    break
        if app.crash_reason is not None:
            raise RuntimeError(f"worker crashed: {app.crash_reason!r}")
    finally:
        await app.stop()
        await sink.close()
        if server is not None:
            server.stop()
    return worker


def run_worker(settings: Settings, stop_when_idle: float | None = None) -> None:
    ensure_topics(settings)

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await worker_main(settings, stop, stop_when_idle)

    asyncio.run(main())


def run_collector(settings: Settings) -> None:
    """Serve the collector until SIGINT/SIGTERM."""
    ensure_topics(settings)
    metrics = Metrics(CollectorRegistry())
    producer = EventProducer(settings, client_id="socialroi-collector")
    producer.start()
    app = build_collector(settings, producer, metrics)
    server = None
    if settings.metrics.port:
        server = MetricsServer(
            metrics, settings.metrics.host, settings.metrics.port, ready=lambda: True
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
    backend = open_backend(settings.clickhouse.url.get_secret_value())
    backend.start()
    try:
        rows = kpi_rows(backend, window_seconds=60, window_kind="tumbling")
        dead = dead_letter_counts(backend)
    finally:
        backend.close()
    diffs = compare_windows(truth["tumbling_60"], rows)
    diffs += compare_dead_letters(truth["dead_letters"], dead)
    windows = len(truth["tumbling_60"])
    if diffs:
        print(f"verify: {len(diffs)} differences between ClickHouse and {truth_path}:")
        for diff in diffs[:50]:
            print(f"  {diff}")
        if len(diffs) > 50:
            print(f"  ... and {len(diffs) - 50} more")
        return 1
    print(
        f"verify: ClickHouse equals the truth ({windows} one-minute windows, "
        f"{sum(truth['dead_letters'].values())} dead letters)"
    )
    return 0
