"""The Faust worker: two agents, thin around the pure core.

``ingest`` (keyed by the producers' keys, per source partition): decode and validate, send
invalid messages to the dead-letter topic and table, decide lateness against the partition's
watermark, and repartition each valid event's contribution by campaign.

``aggregate`` (keyed by campaign): fold contributions into window states that record the
source offsets they include, write each touched state once per batch to its changelog, and
write the snapshots to ClickHouse before the batch is acknowledged.

Ordering that gives the exactly-once effect (DESIGN.md section 3): within a batch, state
changelog messages are queued, then the sink is flushed (retried until it succeeds: back-
pressure, never a drop); only when the agent's body returns does ``take_events`` ack the
batch, and Faust flushes the producer before it commits those offsets.

Tables are written through the event's partition explicitly (``table.data`` plus
``send_changelog``): inside a ``take_events`` batch there is no current event.

Every message a batch produces (changelog, repartition, dead letters, late events) is
awaited until Kafka acknowledged it before the sink is written and the batch acked: Faust's
own pre-commit flush returns after 0.1 s even if messages are still buffered, so it is not
relied on.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import faust
import orjson
from faust.types import EventT

from pipeline.aggregate import Contribution, WindowKey, WindowState, fold
from pipeline.contract import Contract
from pipeline.ingest import Ingestor, Message, PartitionClock, ServiceCosts, as_record
from pipeline.kpi import MICROS
from pipeline.money import Rates
from pipeline.ports import DeadLetterRow, KpiSnapshot, SinkUnavailable, SnapshotSink
from pipeline.settings import Settings
from pipeline.windows import specs_from_settings
from streams.kafka_config import faust_broker, faust_credentials
from streams.metrics import Metrics
from streams.producer import by_campaign_topic, topic_for_kind

__all__ = ["Worker", "build_app"]

log = logging.getLogger(__name__)


class _GuardedSink:
    """Serialises the two agents' flushes and retries until the store takes the rows."""

    def __init__(self, sink: SnapshotSink, metrics: Metrics) -> None:
        self._sink = sink
        self._metrics = metrics
        self._lock = asyncio.Lock()
        self.outage = False

    async def write(
        self, snapshots: Sequence[KpiSnapshot], dead_letters: Sequence[DeadLetterRow]
    ) -> None:
        async with self._lock:
            if snapshots:
                self._sink.add_snapshots(snapshots)
            if dead_letters:
                self._sink.add_dead_letters(dead_letters)
            while True:
                began = time.perf_counter()
                try:
                    await self._sink.flush()
                except SinkUnavailable as exc:
                    # Back-pressure: this agent stops here, so no new batch is consumed
                    # and nothing is acknowledged until the rows are written.
                    self.outage = True
                    self._metrics.sink_errors.inc()
                    self._metrics.sink_outage.set(1)
                    log.warning(
                        "ClickHouse unavailable, retrying in %.1fs: %s", exc.retry_after, exc
                    )
                    await asyncio.sleep(exc.retry_after)
                    continue
                self._metrics.sink_flush_seconds.observe(time.perf_counter() - began)
                if self.outage:
                    log.info("ClickHouse writes resumed")
                self.outage = False
                self._metrics.sink_outage.set(0)
                self._metrics.sink_rows.labels("kpi_windows").inc(len(snapshots))
                self._metrics.sink_rows.labels("dead_letters").inc(len(dead_letters))
                return


class Worker:
    """Owns the Faust app, its topics, tables and agents for one settings object."""

    def __init__(self, settings: Settings, sink: SnapshotSink, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.sink = _GuardedSink(sink, metrics)
        self.kinds = {name: kind for kind, name in topic_for_kind(settings).items()}
        costs = settings.costs
        self.ingestor = Ingestor(
            Contract(
                max_message_bytes=settings.limits.max_message_bytes,
                max_future_skew_ms=settings.windows.max_future_skew_seconds * 1000,
            ),
            Rates.from_file(costs.base_currency, costs.rates_file),
            ServiceCosts(
                round(costs.call_centre_contact_cost * MICROS),
                round(costs.social_contact_cost * MICROS),
            ),
            costs.staff_hourly_rate,
            settings.windows.allowed_lateness_seconds * 1000,
        )
        self.specs = specs_from_settings(
            settings.windows.tumbling_seconds, settings.windows.hopping
        )
        self.last_batch_at = time.monotonic()
        self.batches = 0
        self.app = build_app(settings)
        self._define(self.app)

    def _define(self, app: faust.App) -> None:
        s = self.settings
        raw = {"key_serializer": "raw", "value_serializer": "raw"}
        self.source = app.topic(*self.kinds, **raw)
        self.by_campaign = app.topic(
            by_campaign_topic(s), partitions=s.kafka.partitions, internal=True, **raw
        )
        self.dead_topic = app.topic(s.topics.dead_letters, **raw)
        self.late_topic = app.topic(s.topics.late, **raw)
        self.clocks = app.Table("partition-clocks", partitions=s.kafka.partitions)
        self.windows = app.Table("kpi-windows", partitions=s.kafka.partitions)
        batch, within = s.worker.batch_max_events, s.worker.batch_within_seconds

        @app.agent(self.source, name="ingest")
        async def ingest(stream: faust.StreamT[bytes]) -> None:
            async for events in stream.take_events(batch, within=within):
                await self.handle_ingest(events)

        @app.agent(self.by_campaign, name="aggregate")
        async def aggregate(stream: faust.StreamT[bytes]) -> None:
            async for events in stream.take_events(batch, within=within):
                await self.handle_aggregate(events)

    # -- stage one ----------------------------------------------------------------------
    async def handle_ingest(self, events: Sequence[EventT]) -> None:
        began = time.perf_counter()
        now_ms = int(time.time() * 1000)
        by_tp: dict[tuple[str, int], list[EventT]] = defaultdict(list)
        for event in events:
            by_tp[(event.message.topic, event.message.partition)].append(event)
        dead: list[DeadLetterRow] = []
        sent: list[asyncio.Future[Any]] = []
        for (topic, partition), tp_events in by_tp.items():
            tp_events.sort(key=lambda e: e.message.offset)
            kind = self.kinds[topic]
            self.metrics.consumed.labels(topic, "ingest").inc(len(tp_events))
            clock_key = f"{topic}:{partition}"
            clock = PartitionClock.from_state(self.clocks.data.get(clock_key))
            by_offset = {e.message.offset: e for e in tp_events}
            result = self.ingestor.run(
                kind,
                [Message(e.message.offset, e.message.value) for e in tp_events],
                clock,
                now_ms,
            )
            limit = self.settings.limits.max_message_bytes
            for offset, rejection in result.rejected:
                msg = by_offset[offset].message
                # An oversize payload is kept up to the limit: enough to see what it was,
                # without making the dead-letter topic refuse it too.
                row = DeadLetterRow(
                    reason=rejection.reason.value,
                    detail=rejection.detail,
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    kafka_ts_ms=int(msg.timestamp * 1000) if msg.timestamp else 0,
                    payload=(msg.value or b"")[:limit],
                )
                dead.append(row)
                self.metrics.dead_letters.labels(rejection.reason.value).inc()
                sent.append(self.dead_topic.send_soon(key=msg.key, value=_dead_letter_json(row)))
            for offset, event, watermark in result.late:
                msg = by_offset[offset].message
                self.metrics.late.labels(topic).inc()
                sent.append(
                    self.late_topic.send_soon(
                        key=msg.key,
                        value=orjson.dumps(
                            {
                                "topic": topic,
                                "partition": partition,
                                "offset": offset,
                                "event_id": event.event_id,
                                "event_time_ms": event.ts_ms,
                                "watermark_ms": watermark,
                                "payload_b64": base64.b64encode(msg.value or b"").decode(),
                            }
                        ),
                    )
                )
            src = clock_key
            for offset, forward, watermark in result.forwards:
                sent.append(
                    self.by_campaign.send_soon(
                        key=forward.campaign_id.encode(),
                        value=orjson.dumps(as_record(forward, src, offset, watermark)),
                    )
                )
            state = clock.to_state()
            self.clocks.data[clock_key] = state
            sent.append(self.clocks.send_changelog(partition, clock_key, state))
        await _delivered(sent)
        if dead:
            await self.sink.write((), dead)
        self._batch_done("ingest", len(events), began)

    # -- stage two ----------------------------------------------------------------------
    async def handle_aggregate(self, events: Sequence[EventT]) -> None:
        began = time.perf_counter()
        partition_of: dict[str, int] = {}
        items: list[Contribution] = []
        for event in events:
            record: dict[str, Any] = orjson.loads(event.message.value)
            item = Contribution.from_record(record)
            partition_of[item.campaign_id] = event.message.partition
            items.append(item)
        self.metrics.consumed.labels(self.by_campaign.get_topic_name(), "aggregate").inc(len(items))
        table = self.windows.data

        def load(key: WindowKey) -> WindowState:
            return WindowState.from_state(table.get(key.encode()))

        touched = fold(items, self.specs, load)
        snapshots = []
        sent: list[asyncio.Future[Any]] = []
        for key, state in touched.items():
            encoded, value = key.encode(), state.to_state()
            table[encoded] = value
            sent.append(self.windows.send_changelog(partition_of[key.campaign_id], encoded, value))
            snapshots.append(state.snapshot(key))
        await _delivered(sent)
        if snapshots:
            await self.sink.write(snapshots, ())
        if items:
            self.metrics.freshness.set(max(i.ts_ms for i in items) / 1000)
        self._batch_done("aggregate", len(events), began)

    def _batch_done(self, stage: str, size: int, began: float) -> None:
        self.metrics.batch_size.labels(stage).observe(size)
        self.metrics.batch_seconds.labels(stage).observe(time.perf_counter() - began)
        self.last_batch_at = time.monotonic()
        self.batches += 1


async def _delivered(futures: list[asyncio.Future[Any]]) -> None:
    """Wait until Kafka acknowledged every message; a failed send raises (the batch is
    then not acknowledged and will be processed again)."""
    if futures:
        await asyncio.gather(*futures)


def _dead_letter_json(row: DeadLetterRow) -> bytes:
    return orjson.dumps(
        {
            "reason": row.reason,
            "detail": row.detail,
            "topic": row.topic,
            "partition": row.partition,
            "offset": row.offset,
            "kafka_ts_ms": row.kafka_ts_ms,
            "payload_b64": base64.b64encode(row.payload).decode(),
        }
    )


def build_app(settings: Settings) -> faust.App:
    """A Faust app for these settings; no broker connection until the worker starts."""
    s = settings
    return faust.App(
        s.worker.app_id,
        broker=faust_broker(s.kafka),
        broker_credentials=faust_credentials(s.kafka),
        store="memory://",
        datadir=str(s.worker.data_dir),
        web_enabled=False,
        topic_partitions=s.kafka.partitions,
        topic_replication_factor=s.kafka.replication_factor,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        broker_commit_interval=1.0,
        table_standby_replicas=0,
        stream_buffer_maxsize=max(4096, 2 * s.worker.batch_max_events),
        autodiscover=False,
    )
