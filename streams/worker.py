"""The Faust worker: two agents, thin around the pure core.

``ingest`` (source partitions, co-partitioned by user): ``pipeline.stage_one`` validates,
dead-letters, decides lateness, drops duplicates, keeps touchpoints and credits conversions;
the agent repartitions contributions by campaign and, after each batch, sends every stage-two
partition a heartbeat with each source partition's watermark.

``aggregate`` (keyed by campaign): ``pipeline.aggregate`` folds contributions into window
states that record the source offsets they include; a window whose end every source
watermark has passed is written once more as final and dropped from state.

Order within a batch, which gives the exactly-once effect (DESIGN.md section 3):
1. messages derived from the batch (repartition, heartbeats, dead letters, late events) are
   sent and awaited until Kafka acknowledged them;
2. then ClickHouse is written (retried with back-off until it succeeds: back-pressure);
3. then the changed state keys are written to the changelog, once per key, and awaited:
   persisted state never claims an output or a row that was lost, and a crash before this
   step replays the batch, which recomputes the same outputs and rows (idempotent);
4. only then does the body return, ``take_events`` acks the batch and Faust may commit.
Faust's own pre-commit flush gives up after 0.1 s with messages still buffered, so it is
not relied on. Tables are written through the partition explicitly (``table.data`` plus
``send_changelog``): inside a ``take_events`` batch there is no current event.
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

from pipeline.aggregate import (
    Contribution,
    WindowKey,
    WindowState,
    final_watermark,
    fold,
    parse_key,
)
from pipeline.contract import Contract
from pipeline.ingest import NO_TIME, PartitionClock, ServiceCosts, as_record
from pipeline.kpi import MICROS
from pipeline.money import Rates
from pipeline.partitioning import partition_for
from pipeline.ports import (
    CreditRow,
    DeadLetterRow,
    KpiSnapshot,
    RawEventRow,
    SinkUnavailable,
    SnapshotSink,
)
from pipeline.settings import Settings
from pipeline.stage_one import WATERMARK_KINDS, Ingestor, Message, clock_key
from pipeline.windows import specs_from_settings
from streams.kafka_config import faust_broker, faust_credentials
from streams.metrics import Metrics
from streams.producer import by_campaign_topic, topic_for_kind

__all__ = ["Worker", "build_app"]

log = logging.getLogger(__name__)
Sent = list["asyncio.Future[Any]"]


class _GuardedSink:
    """Serialises the two agents' writes and retries until the store takes the rows."""

    def __init__(self, sink: SnapshotSink, metrics: Metrics) -> None:
        self._sink = sink
        self._metrics = metrics
        self._lock = asyncio.Lock()
        self.outage = False

    async def write(
        self,
        snapshots: Sequence[KpiSnapshot] = (),
        dead_letters: Sequence[DeadLetterRow] = (),
        credits: Sequence[CreditRow] = (),
        raw: Sequence[RawEventRow] = (),
    ) -> None:
        if not (snapshots or dead_letters or credits or raw):
            return
        async with self._lock:
            self._sink.add_snapshots(snapshots)
            self._sink.add_dead_letters(dead_letters)
            self._sink.add_credits(credits)
            self._sink.add_raw_events(raw)
            while True:
                began = time.perf_counter()
                try:
                    await self._sink.flush()
                except SinkUnavailable as exc:
                    # Back-pressure: this agent waits here, so no new batch is consumed
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
                self._metrics.sink_rows.labels("credited_conversions").inc(len(credits))
                self._metrics.sink_rows.labels("raw_events").inc(len(raw))
                return


class _PartitionStore:
    """``StateStore`` over one Faust table for one partition; changes are written to the
    changelog once per key by ``flush``."""

    def __init__(self, table: faust.Table, partition: int) -> None:
        self._table = table
        self._data = table.data
        self.partition = partition
        self._changed: dict[str, Any] = {}

    def get(self, key: str) -> Any | None:
        return self._data.get(key)

    def put(self, key: str, value: Any) -> None:
        self._data[key] = value
        self._changed[key] = value

    def delete(self, key: str) -> None:
        if key in self._data:
            del self._data[key]
        self._changed[key] = None

    def flush(self) -> Sent:
        sent: Sent = []
        for key, value in self._changed.items():
            if value is None:
                sent.append(
                    self._table.send_changelog(self.partition, key, None, value_serializer="raw")
                )
            else:
                sent.append(self._table.send_changelog(self.partition, key, value))
        self._changed.clear()
        return sent


class Worker:
    """Owns the Faust app, its topics, tables and agents for one settings object."""

    def __init__(self, settings: Settings, sink: SnapshotSink, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.sink = _GuardedSink(sink, metrics)
        self.kinds = {name: kind for kind, name in topic_for_kind(settings).items()}
        self.partitions = settings.kafka.partitions
        self.lateness_ms = settings.windows.allowed_lateness_seconds * 1000
        costs, attribution = settings.costs, settings.attribution
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
            self.lateness_ms,
            model=attribution.model,
            lookback_ms=attribution.lookback_seconds * 1000,
            half_life_ms=attribution.half_life_seconds * 1000,
            engagements_are_touchpoints=attribution.engagements_are_touchpoints,
        )
        self.specs = specs_from_settings(
            settings.windows.tumbling_seconds, settings.windows.hopping
        )
        self.traffic = [f"{k}:{p}" for k in WATERMARK_KINDS[:2] for p in range(self.partitions)]
        # stage two, in memory: watermarks heard per partition, and window ends per partition
        self._heard: dict[int, dict[str, int]] = defaultdict(dict)
        self._ends: dict[int, dict[str, int]] | None = None
        self._ends_rebalance = -1
        self.last_batch_at = time.monotonic()
        self.batches = 0
        self.app = build_app(settings)
        self._define(self.app)

    def _define(self, app: faust.App) -> None:
        s = self.settings
        raw = {"key_serializer": "raw", "value_serializer": "raw"}
        self.source = app.topic(*self.kinds, **raw)
        self.by_campaign = app.topic(
            by_campaign_topic(s), partitions=self.partitions, internal=True, **raw
        )
        self.dead_topic = app.topic(s.topics.dead_letters, **raw)
        self.late_topic = app.topic(s.topics.late, **raw)
        self.state = app.Table("ingest-state", partitions=self.partitions)
        self.windows = app.Table("kpi-windows", partitions=self.partitions)
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
        by_partition: dict[int, dict[str, list[EventT]]] = defaultdict(lambda: defaultdict(list))
        for event in events:
            by_partition[event.message.partition][event.message.topic].append(event)
        sent: Sent = []
        dead: list[DeadLetterRow] = []
        credits: list[CreditRow] = []
        raw: list[RawEventRow] = []
        stores = []
        for partition, by_topic in by_partition.items():
            store = _PartitionStore(self.state, partition)
            stores.append(store)
            for topic, tp_events in by_topic.items():
                tp_events.sort(key=lambda e: e.message.offset)
                dead += self._ingest_slice(topic, partition, tp_events, store, now_ms, sent, raw)
            release = self.ingestor.release(partition, store)
            for offset, forward in release.forwards:
                sent.append(
                    self._send_contribution(as_record(forward, release.src, offset, NO_TIME))
                )
            credits += release.rows
            sent += self._heartbeats(partition, store)
        await _delivered(sent)
        await self.sink.write(dead_letters=dead, credits=credits, raw=raw)
        await _delivered([f for store in stores for f in store.flush()])
        self._batch_done("ingest", len(events), began)

    def _ingest_slice(
        self,
        topic: str,
        partition: int,
        tp_events: list[EventT],
        store: _PartitionStore,
        now_ms: int,
        sent: Sent,
        raw: list[RawEventRow],
    ) -> list[DeadLetterRow]:
        kind = self.kinds[topic]
        self.metrics.consumed.labels(topic, "ingest").inc(len(tp_events))
        by_offset = {e.message.offset: e.message for e in tp_events}
        result = self.ingestor.run(
            kind, partition, [Message(o, m.value) for o, m in by_offset.items()], store, now_ms
        )
        limit = self.settings.limits.max_message_bytes
        dead = []
        for offset, rejection in result.rejected:
            msg = by_offset[offset]
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
            msg = by_offset[offset]
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
        self.metrics.duplicates.labels(topic).inc(result.duplicates)
        raw += [
            RawEventRow(e.event_id, topic, e.event_type, e.ts_ms, e.campaign_id, e.channel,
                        e.user_id, by_offset[offset].value or b"")
            for offset, e in result.accepted
        ]
        src = f"{kind}:{partition}"
        for offset, forward in result.forwards:
            sent.append(self._send_contribution(as_record(forward, src, offset, result.watermark)))
        return dead

    def _send_contribution(self, record: dict[str, Any]) -> asyncio.Future[Any]:
        # Explicit partition: stage two finds a window's partition from its campaign alone.
        key = record["c"].encode()
        return self.by_campaign.send_soon(
            key=key, value=orjson.dumps(record), partition=partition_for(key, self.partitions)
        )

    def _heartbeats(self, partition: int, store: _PartitionStore) -> Sent:
        """Tell every stage-two partition how far each source partition has got, after
        everything this batch sent for it (same producer, so in order)."""
        sent: Sent = []
        for kind in WATERMARK_KINDS:
            src = f"{kind}:{partition}"
            latest = PartitionClock.from_state(store.get(clock_key(src))).latest()
            if latest == NO_TIME:
                continue
            beat = orjson.dumps({"hb": 1, "src": src, "wm": latest - self.lateness_ms})
            for target in range(self.partitions):
                sent.append(self.by_campaign.send_soon(key=None, value=beat, partition=target))
        return sent

    # -- stage two ----------------------------------------------------------------------
    async def handle_aggregate(self, events: Sequence[EventT]) -> None:
        began = time.perf_counter()
        items: list[Contribution] = []
        touched_partitions: set[int] = set()
        for event in events:
            record: dict[str, Any] = orjson.loads(event.message.value)
            partition = event.message.partition
            touched_partitions.add(partition)
            if "hb" in record:
                heard = self._heard[partition]
                heard[record["src"]] = max(heard.get(record["src"], NO_TIME), record["wm"])
                continue
            items.append(Contribution.from_record(record))
        self.metrics.consumed.labels(self.by_campaign.get_topic_name(), "aggregate").inc(
            len(events)
        )
        table = self.windows.data
        ends = self._window_ends()

        def load(key: WindowKey) -> WindowState:
            return WindowState.from_state(table.get(key.encode()))

        snapshots = []
        stores: dict[int, _PartitionStore] = {}
        for key, state in fold(items, self.specs, load).items():
            part = partition_for(key.campaign_id.encode(), self.partitions)
            store = stores.setdefault(part, _PartitionStore(self.windows, part))
            store.put(key.encode(), state.to_state())
            ends[part][key.encode()] = key.end_ms
            snapshots.append(state.snapshot(key))
        for part in touched_partitions:
            store = stores.setdefault(part, _PartitionStore(self.windows, part))
            snapshots += self._finalise(part, store, ends[part])
        await self.sink.write(snapshots=snapshots)
        await _delivered([f for store in stores.values() for f in store.flush()])
        if items:
            self.metrics.freshness.set(max(i.ts_ms for i in items) / 1000)
        self._batch_done("aggregate", len(events), began)

    def _window_ends(self) -> dict[int, dict[str, int]]:
        """Window ends per partition, rebuilt from the table after every rebalance (a
        partition taken over from another worker arrives with its recovered windows)."""
        rebalances = self.app.rebalancing_count
        if self._ends is None or rebalances != self._ends_rebalance:
            self._ends = defaultdict(dict)
            self._ends_rebalance = rebalances
            for encoded in list(self.windows.data.keys()):
                key = parse_key(encoded)
                part = partition_for(key.campaign_id.encode(), self.partitions)
                self._ends[part][encoded] = key.end_ms
        return self._ends

    def _finalise(
        self, partition: int, store: _PartitionStore, ends: dict[str, int]
    ) -> list[KpiSnapshot]:
        """Windows every source has passed are written once more, as final; once the
        watermark is a further allowed lateness past them they leave the state."""
        watermark = final_watermark(self._heard[partition], self.traffic)
        if watermark == NO_TIME:
            return []
        self.metrics.watermark.set(watermark / 1000)
        snapshots = []
        for encoded, end in list(ends.items()):
            if end > watermark:
                continue
            state = WindowState.from_state(store.get(encoded))
            if not state.final:
                state.final = True
                store.put(encoded, state.to_state())
                snapshots.append(state.snapshot(parse_key(encoded)))
            elif end + self.lateness_ms <= watermark:
                store.delete(encoded)
                del ends[encoded]
        return snapshots

    def _batch_done(self, stage: str, size: int, began: float) -> None:
        self.metrics.batch_size.labels(stage).observe(size)
        self.metrics.batch_seconds.labels(stage).observe(time.perf_counter() - began)
        self.last_batch_at = time.monotonic()
        self.batches += 1


async def _delivered(futures: Sent) -> None:
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
