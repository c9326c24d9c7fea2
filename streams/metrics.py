"""Every Prometheus collector of the pipeline, created against a registry passed in.

Labels come only from small bounded sets (topic, partition, stage, reason, table); never
campaign or user ids. Units are base units: seconds, bytes, totals. The alert rules in
deploy/prometheus/alerts.yml and the dashboards in deploy/grafana/dashboards/ use these names.

Each process exports only its own families (a collector does not report a worker's batch
histograms as zeros), plus the process's own: ``process_*`` (memory, CPU, open files),
``python_gc_*`` and ``python_info``, which a custom registry leaves out unless asked.
"""

from __future__ import annotations

import importlib.metadata
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from streams.logs import counts

__all__ = ["CollectorMetrics", "Metrics", "MetricsServer"]

_BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def _process(registry: CollectorRegistry) -> None:
    """The process's own families: the collectors prometheus_client registers on its
    global registry, registered on this one too (they read /proc and the interpreter when
    scraped, and keep no state)."""
    for collector in (PROCESS_COLLECTOR, GC_COLLECTOR, PLATFORM_COLLECTOR):
        registry.register(collector)
    registry.register(_LogCounts())  # what this process's log filters kept out


def _identity(registry: CollectorRegistry, component: str) -> None:
    """``socialroi_build_info{component, version} 1``: says which targets are socialroi
    workers or collectors whatever the scrape job is called (compose names its jobs,
    Kubernetes annotation scraping does not), so alerts and panels join on it."""
    try:
        version = importlib.metadata.version("socialroi")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    Gauge(
        "socialroi_build_info",
        "1, labelled with what this process is (worker or collector) and its version",
        ["component", "version"],
        registry=registry,
    ).labels(component, version).set(1)


def _produced(registry: CollectorRegistry) -> Counter:
    return Counter("socialroi_events_produced", "Messages produced", ["topic"], registry=registry)


def _dead_letters(registry: CollectorRegistry) -> Counter:
    return Counter(
        "socialroi_dead_letters", "Messages rejected, by reason", ["reason"], registry=registry
    )


class CollectorMetrics:
    """The HTTP collector's collectors: what it produced and refused, and its process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        _process(registry)
        _identity(registry, "collector")
        self.produced = _produced(registry)
        self.dead_letters = _dead_letters(registry)


class Metrics:
    """The worker's collectors. Tests build one on a fresh ``CollectorRegistry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        _process(registry)
        _identity(registry, "worker")
        self.consumed = Counter(
            "socialroi_events_consumed", "Messages consumed", ["topic", "stage"], registry=registry
        )
        self.produced = _produced(registry)
        self.dead_letters = _dead_letters(registry)
        self.late = Counter(
            "socialroi_late_events",
            "Events later than the allowed lateness",
            ["topic"],
            registry=registry,
        )
        self.duplicates = Counter(
            "socialroi_duplicates",
            "Events whose event_id was already counted",
            ["topic"],
            registry=registry,
        )
        self.replays_skipped = Counter(
            "socialroi_replays_skipped",
            "Contributions stage two skipped because their panes already included them "
            "(the batch processed again after a restart or a rebalance)",
            registry=registry,
        )
        self.gap_reads = Counter(
            "socialroi_gap_reads",
            "Offset ranges the worker read itself because the consumer did not deliver them",
            registry=registry,
        )
        self.batch_size = Histogram(
            "socialroi_batch_events",
            "Events per processed batch",
            ["stage"],
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "socialroi_batch_seconds",
            "Time to process one batch",
            ["stage"],
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.sink_flush_seconds = Histogram(
            "socialroi_sink_flush_seconds",
            "Time to write one batch to ClickHouse",
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.sink_rows = Counter(
            "socialroi_sink_rows_written",
            "Rows written to ClickHouse",
            ["table"],
            registry=registry,
        )
        self.sink_errors = Counter(
            "socialroi_sink_errors", "Failed writes to ClickHouse (retried)", registry=registry
        )
        self.sink_outage = Gauge(
            "socialroi_sink_outage", "1 while ClickHouse refuses writes", registry=registry
        )
        self.watermark = Gauge(
            "socialroi_watermark_seconds",
            "Lowest source watermark seen (event time)",
            registry=registry,
        )
        self.freshness = Gauge(
            "socialroi_last_write_event_time_seconds",
            "Event time of the newest event whose effect is in ClickHouse",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "socialroi_consumer_lag",
            "Messages of an assigned partition (ingest topics and the repartition topic) "
            "whose effect the worker's state has not recorded: log end offset minus the first "
            "offset the state has not seen (the consumer's position until it has seen one)",
            ["topic", "partition"],
            registry=registry,
        )
        self.rebalances = Counter(
            "socialroi_rebalances",
            "Consumer group rebalances this worker went through (the first assignment counts)",
            registry=registry,
        )
        self.assigned_partitions = Gauge(
            "socialroi_assigned_partitions",
            "Source partitions currently assigned to this worker",
            registry=registry,
        )


class _LogCounts(Collector):
    """What the log filters of streams.logs kept out of the log, in this process."""

    def collect(self) -> Iterator[Metric]:
        suppressed, silenced = counts()
        repeats = CounterMetricFamily(
            "socialroi_log_repeats_suppressed",
            "Repeats of a WARNING/ERROR not logged one by one (summarised), by level",
            labels=["level"],
        )
        for level, value in sorted(suppressed.items()):
            repeats.add_metric([level], value)
        yield repeats
        checks = CounterMetricFamily(
            "socialroi_log_silenced",
            "Third-party messages not logged because they are false alarms for this worker, "
            "by check (faust_fetch_path: Faust's paused fetching; thread_keepalive; "
            "kafka_slow_task: kafka-python's slow I/O step note)",
            labels=["check"],
        )
        for check, value in sorted(silenced.items()):
            checks.add_metric([check], value)
        yield checks


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A scraper that gave up before the answer was written (a timeout while the
        # worker is busy) is not an error of ours; anything else is still reported.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class MetricsServer:
    """``/metrics``, ``/healthz`` (alive) and ``/readyz`` (ready) on a background thread.

    ``not_alive`` and ``not_ready`` say why the process is not alive or not ready, or
    ``None`` when it is (``streams.health``): the endpoint answers 200, or 503 with the
    reason. They are called on the server's thread, so they only read values the process
    keeps up to date; this thread answering proves nothing about the event loop."""

    def __init__(
        self,
        metrics: Metrics | CollectorMetrics,
        host: str,
        port: int,
        *,
        not_ready: Callable[[], str | None],
        not_alive: Callable[[], str | None],
    ) -> None:
        self._metrics = metrics
        self._address = (host, port)
        self._not_ready = not_ready
        self._not_alive = not_alive
        self._server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self._address[1]

    def start(self) -> None:
        registry, not_ready, not_alive = self._metrics.registry, self._not_ready, self._not_alive

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    self._answer(not_alive(), b"ok\n", "not alive")
                elif self.path == "/readyz":
                    self._answer(not_ready(), b"ready\n", "not ready")
                else:
                    self._send(404, b"not found\n")

            def _answer(self, reason: str | None, ok: bytes, what: str) -> None:
                if reason is None:
                    self._send(200, ok)
                else:
                    self._send(503, f"{what}: {reason}\n".encode())

            def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # scrapes every second would flood the log

        self._server = _QuietServer(self._address, Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
