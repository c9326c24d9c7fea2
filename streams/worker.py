"""The Faust worker: two agents, thin around the pure core.

``ingest`` (source partitions, co-partitioned by user): ``pipeline.stage_one`` validates,
dead-letters, decides lateness, drops duplicates, keeps touchpoints and credits conversions;
the agent repartitions contributions by campaign and, after each batch, sends every stage-two
partition a heartbeat with each source partition's watermark. It reads the dead-letter topic
too, for the HTTP collector's letters: they go to the ``dead_letters`` table.

``aggregate`` (keyed by campaign): ``pipeline.stage_two`` folds contributions into panes
that record the source offsets they include (one pane per pane size per event; the reader
views compose hopping windows from them); a pane whose end every source watermark has passed
is written once more as final, and leaves the state an allowed lateness later.

Order within a batch, which gives the exactly-once effect (DESIGN.md section 3):
1. messages derived from the batch (repartition, heartbeats, dead letters, late events) are
   sent and awaited until Kafka acknowledged them;
2. then ClickHouse is written (retried with back-off until it succeeds: back-pressure);
3. then the changed state keys are written to the changelog, once per key, and awaited:
   persisted state never claims an output or a row that was lost, and a crash before this
   step replays the batch, which recomputes the same outputs and rows (idempotent);
4. then the first offset the state has not seen is committed (and ``take_events`` acks a
   batch Faust delivered).
Faust assigns partitions and recovers tables; the worker reads its partitions itself, a
batch at a time (``streams.feed``). Messages go straight to the aiokafka producer under
Faust (``streams.batch_io.deliver``), tables are written through their live values and
their changelog topic explicitly (then, once Kafka acknowledged the changelog, to the local
store: see ``streams.app``): a batch has no current Faust event. Which offsets a batch
covers is decided from the state, not from what was fetched (``streams.offsets``).

With ``worker.stage`` set to ``ingest`` or ``aggregate``, a process runs one stage: its
own consumer group, its stage's table and agent only; the other stage runs in another
process (the two talk only through Kafka, so they then use two cores).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import faust
import orjson

from pipeline.aggregate import Contribution
from pipeline.contract import Contract
from pipeline.ingest import NO_TIME, PartitionClock, ServiceCosts, as_record
from pipeline.kpi import MICROS
from pipeline.money import Rates
from pipeline.ports import (
    CampaignRow,
    CreditRow,
    DeadLetterRow,
    RawEventRow,
    SnapshotSink,
    WatermarkRow,
)
from pipeline.settings import Settings
from pipeline.stage_one import WATERMARK_KINDS, Ingestor, Message, clock_key
from pipeline.stage_two import (
    Aggregator,
    decode_position,
    encode_position,
    heard_key,
    position_key,
)
from pipeline.windows import specs_from_settings
from streams.app import CompactedTable, build_app
from streams.batch_io import (
    BatchAbandoned,
    GuardedSink,
    Packs,
    PartitionStore,
    Sent,
    app_table,
    campaign_partition,
    deliver,
    table_dict,
)
from streams.dead_letters import COLLECTED_KIND, collected_letters, dead_letter_message
from streams.direct import DirectReader, Record, record_of
from streams.feed import Feed
from streams.metrics import Metrics
from streams.offsets import Offsets
from streams.producer import by_campaign_topic, topic_for_kind

__all__ = ["Worker"]

log = logging.getLogger(__name__)
# How long stopping waits for a batch under way.
_STOP_WAIT_SECONDS = 60.0
# How long without a batch before watermarks not yet sent since a rebalance are sent.
_BEAT_IDLE_SECONDS = 2.0


class Worker:
    """Owns the Faust app, its topics, tables and agents for one settings object."""

    def __init__(self, settings: Settings, sink: SnapshotSink, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.sink = GuardedSink(sink, metrics)
        self.kinds = {name: kind for kind, name in topic_for_kind(settings).items()}
        # Stage one also reads the dead-letter topic, for the HTTP collector's letters.
        self.kinds[settings.topics.dead_letters] = COLLECTED_KIND
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
        self.stage_two = Aggregator(
            self.specs,
            self.lateness_ms,
            self.traffic,
            functools.partial(campaign_partition, partitions=self.partitions),
        )
        # stage two, in memory: watermarks heard per partition; the partitions whose panes
        # are indexed since the last rebalance; the watermark last written per partition
        self._heard: dict[int, dict[str, int]] = defaultdict(dict)
        self._indexed: set[int] = set()
        self._indexed_rebalance = -1
        self._marked: dict[int, int] = {}
        # stage one: the rebalance count at which each partition's touches were indexed
        self._touches_indexed: dict[int, int] = {}
        # Cost partitions (numbers) with messages but no event read yet, as of the last
        # positioning of the ingest feed (see ``_watermarks``).
        self._costs_waiting: set[int] = set()
        # Per (table, partition): changes of an abandoned batch (see ``_store``).
        self._unwritten: dict[tuple[str, int], dict[str, Any]] = {}
        self.last_delivered_at = time.monotonic()  # a batch reached a stage
        self.batch_since: float | None = None  # when the batch under way began (liveness)
        self.batches = 0
        # One batch at a time per stage, whether its feed read it or Faust delivered it.
        self._ingest_lock = asyncio.Lock()
        self._aggregate_lock = asyncio.Lock()
        self.direct = DirectReader(
            settings.kafka, settings.worker.batch_max_events, settings.worker.group_id
        )
        # Per source partition, the watermark last sent since the last rebalance (beat).
        self._beaten: dict[str, int | None] = {}
        self.app = build_app(settings)
        self._define(self.app)
        self.offsets = Offsets(
            self.app, self.direct, metrics, self._positions, self.consumed_topics, self.partitions
        )
        self.offsets.on_rebalance.append(self._beaten.clear)
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.app.on_partitions_assigned.connect(self._on_assigned)

    def _define(self, app: faust.App) -> None:
        """The topics, and the tables and agents of the stages this process runs
        (``worker.stage``): a stage's table exists only in the process running it."""
        s = self.settings
        raw = {"key_serializer": "raw", "value_serializer": "raw"}
        self.source = app.topic(*self.kinds, **raw)
        self.by_campaign = app.topic(
            by_campaign_topic(s), partitions=self.partitions, internal=True, **raw
        )
        self.dead_topic = app.topic(s.topics.dead_letters, **raw)
        self.late_topic = app.topic(s.topics.late, **raw)
        batch, within = s.worker.batch_max_events, s.worker.batch_within_seconds
        # Each stage's batch handler, whichever path delivers the batch (a feed, or an
        # agent taking what Faust fetched before the feed paused it).
        self._handlers = {
            "ingest": self._timed(self.handle_ingest),
            "aggregate": self._timed(self.handle_aggregate),
        }
        self.runs_ingest = s.worker.stage in ("all", "ingest")
        self.runs_aggregate = s.worker.stage in ("all", "aggregate")
        # what the agents consume (not the tables' changelogs), and each table's topics
        consumed: list[str] = []
        self._table_topics: dict[str, set[str]] = {}
        if self.runs_ingest:
            consumed += self.kinds
            self.state = app_table(app, s.worker.app_id, "ingest-state", partitions=self.partitions)
            self._table_topics[self.state.name] = set(self.kinds)

            @app.agent(self.source, name="ingest")
            async def ingest(stream: faust.StreamT[bytes]) -> None:
                async for events in stream.take_events(batch, within=within):
                    self._delivered()
                    async with self._ingest_lock:
                        with contextlib.suppress(BatchAbandoned):
                            await self._handlers["ingest"]([record_of(e.message) for e in events])

        if self.runs_aggregate:
            consumed.append(self.by_campaign.get_topic_name())
            # Values are panes in their binary form (``PaneState.encode``): raw bytes.
            self.windows = app_table(
                app, s.worker.app_id, "kpi-windows", partitions=self.partitions, value_type=bytes
            )
            self._table_topics[self.windows.name] = {self.by_campaign.get_topic_name()}

            @app.agent(self.by_campaign, name="aggregate")
            async def aggregate(stream: faust.StreamT[bytes]) -> None:
                async for events in stream.take_events(batch, within=within):
                    self._delivered()
                    async with self._aggregate_lock:
                        with contextlib.suppress(BatchAbandoned):
                            records = [record_of(e.message) for e in events]
                            await self._handlers["aggregate"](records)

        self.consumed_topics = tuple(consumed)

    # -- reading the assigned partitions (``streams.feed``, ``streams.offsets``) -----------
    def start_feeds(self) -> list[asyncio.Task[None]]:
        """One task per stage this process runs, reading its assigned partitions; stop them
        by cancelling."""
        stages = []
        if self.runs_ingest:
            stages.append(("ingest", set(self.kinds), self._ingest_lock))
        if self.runs_aggregate:
            topics = {self.by_campaign.get_topic_name()}
            stages.append(("aggregate", topics, self._aggregate_lock))
        feeds = [
            Feed(
                stage,
                topics,
                self._handlers[stage],
                lock,
                app=self.app,
                kafka=self.settings.kafka,
                batch_max_events=self.settings.worker.batch_max_events,
                offsets=self.offsets,
                settled=self.settled,
                delivered=self._delivered,
                positioned=self._costs_positioned if stage == "ingest" else None,
            )
            for stage, topics, lock in stages
        ]
        return [asyncio.create_task(feed.run()) for feed in feeds]

    async def stop_feeds(self, feeds: list[asyncio.Task[None]]) -> None:
        """Stop the feeds between batches (a batch under way may take up to a minute to
        finish, then it is cut off: the next owner processes it again)."""
        async with contextlib.AsyncExitStack() as held:
            for lock in (self._ingest_lock, self._aggregate_lock):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lock.acquire(), timeout=_STOP_WAIT_SECONDS)
                    held.callback(lock.release)
            for feed in feeds:
                feed.cancel()
            await asyncio.gather(*feeds, return_exceptions=True)

    def _delivered(self) -> None:
        self.last_delivered_at = time.monotonic()

    def _timed(
        self, handle: Callable[[Sequence[Record]], Awaitable[None]]
    ) -> Callable[[Sequence[Record]], Awaitable[None]]:
        """``handle``, noting when the batch under way began (``batch_since``)."""

        async def timed(records: Sequence[Record]) -> None:
            self.batch_since = time.monotonic()
            try:
                await handle(records)
            finally:
                self.batch_since = None

        return timed

    async def _costs_positioned(self, tps: list[tuple[str, int]]) -> None:
        """Note the cost partitions with messages but no event read yet (``_watermarks``)."""
        costs = [tp for tp in tps if self.kinds.get(tp[0]) == WATERMARK_KINDS[2]]
        if costs:
            ends = await self.direct.ends(costs)
            self._costs_waiting = {
                p for t, p in costs if self.next_unseen(t, p) is None and ends[(t, p)] > 0
            }

    def _positions(self, topic: str, partition: int) -> tuple[int | None, int | None]:
        """(where a replay starts, first offset the state has not seen) for a consumed
        partition, from its state; ``None`` for the start of the partition."""
        if topic in self.kinds:
            src = f"{self.kinds[topic]}:{partition}"
            clock = PartitionClock.from_state(table_dict(self.state, partition).get(clock_key(src)))
            return clock.replay_from(), clock.next_offset()
        if topic != self.by_campaign.get_topic_name():
            return None, None
        stored = table_dict(self.windows, partition).get(position_key(partition))
        return decode_position(stored) if stored is not None else (None, None)

    def next_unseen(self, topic: str, partition: int) -> int | None:
        """The first offset of a consumed partition its state has not seen."""
        return self.offsets.next_unseen(topic, partition)

    @property
    def last_progress_at(self) -> float:
        """When a batch last reached offsets the state had not seen (monotonic)."""
        return self.offsets.last_progress_at

    async def drained(self) -> bool:
        """Settled, and the whole group is done (``Offsets.drained``)."""
        return self.settled() and await self.offsets.drained()

    def _store(self, table: CompactedTable, partition: int) -> PartitionStore:
        """A batch's store for one partition of ``table``, holding the changes an abandoned
        batch of it left unwritten, if the partition is still this worker's."""
        unwritten = self._unwritten.pop((table.name, partition), None)
        return PartitionStore(table, partition, unwritten)

    @contextlib.asynccontextmanager
    async def _keeping_unwritten(self, stores: Iterable[PartitionStore]) -> AsyncIterator[None]:
        """A batch abandoned while waiting for ClickHouse (:class:`BatchAbandoned`) has
        changed this worker's tables in memory but not their changelogs, and its rows wait
        in the sink's buffer. If the partition stays here, the feed goes on after that batch,
        so its changes are written with the partition's next batch, after the rows; if the
        partition moves, they are dropped at the next rebalance and the next owner replays
        the batch from what the changelog says."""
        try:
            yield
        except BatchAbandoned:
            for store in stores:
                if store.unwritten():
                    key = (store._table.name, store.partition)
                    self._unwritten[key] = {**self._unwritten.get(key, {}), **store.unwritten()}
            raise

    async def _on_assigned(self, sender: Any, assigned: Any, **kwargs: Any) -> None:
        """Changes an abandoned batch left unwritten stay only with partitions that came back
        to this worker (Faust revokes every partition at each rebalance, then assigns)."""
        ours = {(tp.topic, tp.partition) for tp in assigned}
        for name, partition in list(self._unwritten):
            if not any((topic, partition) in ours for topic in self._table_topics[name]):
                del self._unwritten[(name, partition)]

    async def _on_revoked(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        """A rebalance takes partitions away: it waits for the batch each stage is in the
        middle of, so a partition's next owner never recovers state that this worker is
        still writing (Faust waits by itself only for the messages it delivered). A batch
        waiting for ClickHouse to come back is abandoned instead of waited for: it has
        written nothing to Kafka's changelog or offsets yet, and the next owner replays it."""
        async with self.sink.abandoning():
            async with self._ingest_lock:
                pass
            async with self._aggregate_lock:
                pass

    def settled(self) -> bool:
        app = self.app
        return not (
            app.rebalancing
            or app.in_recovery
            or not app.tables.recovery.completed.is_set()
            or self.sink.outage
        )

    # -- stage one ----------------------------------------------------------------------
    async def handle_ingest(self, delivered: Sequence[Record]) -> None:
        began = time.perf_counter()
        now_ms = int(time.time() * 1000)
        by_partition: dict[int, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
        for record in delivered:
            by_partition[record.partition][record.topic].append(record)
        count = 0
        sent: Sent = []
        beats: Sent = []
        packs = Packs(self.by_campaign.get_topic_name(), self.partitions)
        dead: list[DeadLetterRow] = []
        credits: list[CreditRow] = []
        raw: list[RawEventRow] = []
        campaigns: list[CampaignRow] = []
        stores = []
        for partition, by_topic in by_partition.items():
            store = self._store(self.state, partition)
            stores.append(store)
            if self._touches_indexed.get(partition) != self.app.rebalancing_count:
                # Once per partition after each rebalance, before its first batch: the
                # users whose touches expire (a memory store's dict holds every partition).
                self._touches_indexed[partition] = self.app.rebalancing_count
                shared = None if self.state.persistent else self.partitions
                live = table_dict(self.state, partition).items()
                self.ingestor.index_touches(partition, live, shared)
            for topic, tp_records in by_topic.items():
                records = await self.offsets.consecutive(tp_records)
                if not records:
                    continue
                count += len(records)
                dead += self._ingest_slice(
                    topic, partition, records, store, now_ms, sent, packs, raw, campaigns
                )
            release = self.ingestor.release(partition, store)
            for offset, forward in release.forwards:
                packs.add(as_record(forward, release.src, offset, NO_TIME))
            credits += release.rows
            beats += self._heartbeats(partition, store)
        # Every stage-two partition gets this batch's contributions before its heartbeats.
        await deliver(self.app, sent + packs.messages() + beats)
        async with self._keeping_unwritten(stores):
            await self.sink.write(dead_letters=dead, credits=credits, raw=raw, campaigns=campaigns)
        await self._write_changelogs(stores)
        await self.offsets.commit_seen({(r.topic, r.partition) for r in delivered})
        self._batch_done("ingest", count, began)

    def _ingest_slice(
        self,
        topic: str,
        partition: int,
        records: list[Record],
        store: PartitionStore,
        now_ms: int,
        sent: Sent,
        packs: Packs,
        raw: list[RawEventRow],
        campaigns: list[CampaignRow],
    ) -> list[DeadLetterRow]:
        kind = self.kinds[topic]
        if kind == COLLECTED_KIND:  # the collector's letters for the table: no events
            return collected_letters(
                topic, partition, [(r.offset, r.value) for r in records], store
            )
        self.metrics.consumed.labels(topic, "ingest").inc(len(records))
        by_offset = {r.offset: r for r in records}
        result = self.ingestor.run(
            kind, partition, [Message(r.offset, r.value) for r in records], store, now_ms
        )
        dead = []
        for offset, rejection in result.rejected:
            msg = by_offset[offset]
            # The original whole, oversize or not: the dead-letter topic takes any message an
            # ingest topic does, and the sink keeps a prefix with the length and digest.
            row = DeadLetterRow(
                reason=rejection.reason.value,
                detail=rejection.detail,
                topic=topic,
                partition=partition,
                offset=offset,
                kafka_ts_ms=msg.timestamp_ms,
                payload=msg.value or b"",
            )
            dead.append(row)
            self.metrics.dead_letters.labels(rejection.reason.value).inc()
            letter = _dead_letter_json(row, msg.key)
            sent.append((self.dead_topic.get_topic_name(), msg.key, letter, None))
        for offset, event, watermark in result.late:
            msg = by_offset[offset]
            self.metrics.late.labels(topic).inc()
            late = {
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "event_id": event.event_id,
                "event_time_ms": event.ts_ms,
                "watermark_ms": watermark,
                "payload_b64": base64.b64encode(msg.value or b"").decode(),
            }
            sent.append((self.late_topic.get_topic_name(), msg.key, orjson.dumps(late), None))
        self.metrics.duplicates.labels(topic).inc(result.duplicates)
        raw += [
            RawEventRow(
                e.event_id,
                topic,
                e.event_type,
                e.ts_ms,
                e.campaign_id,
                e.channel,
                e.user_id,
                by_offset[offset].value or b"",
            )
            for offset, e in result.accepted
        ]
        campaigns += result.campaigns
        src = f"{kind}:{partition}"
        for offset, forward in result.forwards:
            packs.add(as_record(forward, src, offset, result.watermark))
        return dead

    def _watermarks(
        self, partition: int, store: PartitionStore | None = None
    ) -> dict[str, int | None]:
        """Watermark of each source partition ``partition`` that has seen an event, and
        ``NO_TIME`` for a cost partition with messages waiting but none read yet (``None``
        once they are read and none had an event time: the hold is released).

        A cost partition counts for finality from its first event on (one that never has
        an event must not hold windows open for ever). But one read late, after a restart
        or while the feed drains a backlog of other partitions first, would let the final
        watermark run past the costs it holds: their panes would be finished and dropped
        before the costs arrive. Announcing it as not started holds finality until it is
        read."""
        get = store.get if store else table_dict(self.state, partition).get
        found = {}
        for kind in WATERMARK_KINDS:
            src = f"{kind}:{partition}"
            clock = PartitionClock.from_state(get(clock_key(src)))
            latest = clock.latest()
            found_mark: int | None = latest - self.lateness_ms
            if latest == NO_TIME:
                if kind != WATERMARK_KINDS[2] or partition not in self._costs_waiting:
                    continue
                found_mark = NO_TIME if clock.next_offset() is None else None
            found[src] = found_mark
        return found

    def _heartbeats(self, partition: int, store: PartitionStore | None = None) -> Sent:
        """Tell every stage-two partition how far each source partition has got, after
        everything this batch sent for it (same producer, so in order)."""
        self.offsets.since_rebalance()
        sent: Sent = []
        for src, watermark in self._watermarks(partition, store).items():
            self._beaten[src] = watermark
            beat = orjson.dumps({"hb": 1, "src": src, "wm": watermark})
            for target in range(self.partitions):
                sent.append((self.by_campaign.get_topic_name(), None, beat, target))
        return sent

    async def beat(self) -> None:
        """Send heartbeats for assigned source partitions whose watermark this process has
        not sent since the last rebalance. Stage two keeps what it heard in memory only, so
        after a restart or a rebalance it needs them again even when no new event comes."""
        if not self.runs_ingest:
            return
        if time.monotonic() - self.last_delivered_at < _BEAT_IDLE_SECONDS or not self.settled():
            return
        async with self._ingest_lock:
            self.offsets.since_rebalance()
            partitions = {
                tp.partition for tp in self.app.consumer.assignment() if tp.topic in self.kinds
            }
            sent: Sent = []
            for partition in sorted(partitions):
                marks = self._watermarks(partition).items()
                if any(self._beaten.get(src) != watermark for src, watermark in marks):
                    sent += self._heartbeats(partition)
            await deliver(self.app, sent)

    # -- stage two ----------------------------------------------------------------------
    async def handle_aggregate(self, delivered: Sequence[Record]) -> None:
        began = time.perf_counter()
        items: list[Contribution] = []
        by_partition: dict[int, list[Record]] = defaultdict(list)
        for message in delivered:
            by_partition[message.partition].append(message)
        self._index_panes(by_partition)
        positions: dict[int, tuple[int, int]] = {}
        count = 0
        for partition, part_records in by_partition.items():
            records = await self.offsets.consecutive(part_records)
            if not records:
                continue
            count += len(records)
            # [first offset of this batch, first offset not seen]: the first is where a
            # replay starts if this batch's changes persist only in part.
            unseen = self.next_unseen(self.by_campaign.get_topic_name(), partition) or 0
            positions[partition] = (records[0].offset, max(records[-1].offset + 1, unseen))
            heard = self._heard[partition]
            for message in records:
                record: dict[str, Any] = orjson.loads(message.value or b"{}")
                if "cs" in record:
                    items += [Contribution.from_record(c) for c in record["cs"]]
                elif "hb" in record:
                    src, mark = record["src"], record["wm"]
                    if mark is not None:
                        heard[src] = max(heard.get(src, NO_TIME), mark)
                    elif heard.get(src) == NO_TIME:
                        del heard[src]  # a waiting cost partition had no event: no hold
        self.metrics.consumed.labels(self.by_campaign.get_topic_name(), "aggregate").inc(count)
        stores: dict[int, PartitionStore] = {}

        def store_for(part: int) -> PartitionStore:
            store = stores.get(part)
            if store is None:
                store = stores[part] = self._store(self.windows, part)
            return store

        snapshots = self.stage_two.fold(items, store_for)
        marks = []
        for part, (first, unseen) in positions.items():
            store = store_for(part)
            watermark, final = self.stage_two.finalise(part, self._heard[part], store)
            snapshots += final
            if watermark != NO_TIME:
                self.metrics.watermark.set(watermark / 1000)
                if watermark > self._marked.get(part, NO_TIME):
                    marks.append(WatermarkRow(part, self.partitions, watermark))
            # Kept with the panes, so a worker taking the partition over knows them too.
            store.put(position_key(part), encode_position(first, unseen))
            store.put(heard_key(part), orjson.dumps(self._heard[part]))
        # Panes, then watermarks (the sink writes them in that order), then the changelog.
        async with self._keeping_unwritten(stores.values()):
            await self.sink.write(snapshots=snapshots, watermarks=marks)
        for mark in marks:
            self._marked[mark.partition] = mark.watermark_ms
        await self._write_changelogs(stores.values())
        await self.offsets.commit_seen({(r.topic, r.partition) for r in delivered})
        if items:
            self.metrics.freshness.set(max(i.ts_ms for i in items) / 1000)
        self._batch_done("aggregate", count, began)

    def _index_panes(self, partitions: Iterable[int]) -> None:
        """Index the panes of each partition once after every rebalance (a partition taken
        over from another worker arrives with its recovered panes), and take up the
        watermarks its state had heard: without them, a restarted worker that has heard
        again from every traffic partition but not yet from a lagging cost partition would
        compute a final watermark past that partition's, and finish (then drop) panes its
        next contributions still belong to."""
        rebalances = self.app.rebalancing_count
        if rebalances != self._indexed_rebalance:
            self.stage_two.forget()
            self._indexed.clear()
            self._marked.clear()
            self._indexed_rebalance = rebalances
        for part in partitions:
            if part not in self._indexed:
                table = table_dict(self.windows, part)
                self.stage_two.index(part, table)
                stored = table.get(heard_key(part))
                if stored is not None:
                    heard = self._heard[part]
                    for src, mark in orjson.loads(stored).items():
                        heard[src] = max(heard.get(src, NO_TIME), mark)
                self._indexed.add(part)

    async def _write_changelogs(self, stores: Iterable[PartitionStore]) -> None:
        """Write the stores' changes to their changelogs, then, once Kafka acknowledged
        them, to the local store."""
        stores = list(stores)
        last_offsets = await deliver(self.app, [m for store in stores for m in store.flush()])
        for store in stores:
            store.persist(last_offsets)

    def _batch_done(self, stage: str, size: int, began: float) -> None:
        self.metrics.batch_size.labels(stage).observe(size)
        self.metrics.batch_seconds.labels(stage).observe(time.perf_counter() - began)
        self.batches += 1


def _dead_letter_json(row: DeadLetterRow, key: bytes | None) -> bytes:
    return dead_letter_message(
        reason=row.reason,
        detail=row.detail,
        topic=row.topic,
        partition=row.partition,
        offset=row.offset,
        kafka_ts_ms=row.kafka_ts_ms,
        payload=row.payload,
        key=key,
    )
