"""The Faust worker: two agents, thin around the pure core.

``ingest`` (source partitions, co-partitioned by user): ``pipeline.stage_one`` validates,
dead-letters, decides lateness, drops duplicates, keeps touchpoints and credits conversions;
the agent repartitions contributions by campaign and, after each batch, sends every stage-two
partition a heartbeat with each source partition's watermark.

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
batch at a time (see "reading the assigned partitions" below). Messages go straight to the
aiokafka producer under Faust (``_deliver``), tables are written through their live values
and their changelog topic explicitly (then, once Kafka acknowledged the changelog, to the
local store: see ``streams.app``): a batch has no current Faust event. Which offsets a batch
covers is decided from the state, not from what was fetched (see "consecutive offsets").
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
from aiokafka.errors import KafkaError
from faust.types import TP

from pipeline.aggregate import Contribution
from pipeline.contract import Contract
from pipeline.gaps import missing_ranges
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
    table_dict,
)
from streams.direct import DirectReader, PartitionFeed, Record, record_of
from streams.metrics import Metrics
from streams.producer import by_campaign_topic, topic_for_kind

__all__ = ["Worker"]

log = logging.getLogger(__name__)
# How long a stage's feed waits for messages before it looks at the assignment again.
_FEED_WAIT_MS = 200
# How long stopping waits for a batch under way.
_STOP_WAIT_SECONDS = 60.0
# How long without a batch before watermarks not yet sent since a rebalance are sent.
_BEAT_IDLE_SECONDS = 2.0
_READ_ATTEMPTS = 5


class Worker:
    """Owns the Faust app, its topics, tables and agents for one settings object."""

    def __init__(self, settings: Settings, sink: SnapshotSink, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.sink = GuardedSink(sink, metrics)
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
        self.last_progress_at = time.monotonic()  # a batch reached offsets the state had not seen
        self.batches = 0
        # One batch at a time per stage, whether its feed read it or Faust delivered it.
        self._ingest_lock = asyncio.Lock()
        self._aggregate_lock = asyncio.Lock()
        self.direct = DirectReader(
            settings.kafka, settings.worker.batch_max_events, settings.worker.app_id
        )
        # Forgotten at every rebalance (_since_rebalance): the (topic, partition) pairs
        # handled (_replaying), and per source partition the watermark last sent (beat).
        self._handled: set[tuple[str, int]] = set()
        self._beaten: dict[str, int | None] = {}
        self._rebalance_seen = -1
        self.app = build_app(settings)
        self._define(self.app)
        self.app.on_partitions_revoked.connect(self._on_revoked)
        self.app.on_partitions_assigned.connect(self._on_assigned)

    def _define(self, app: faust.App) -> None:
        s = self.settings
        raw = {"key_serializer": "raw", "value_serializer": "raw"}
        self.source = app.topic(*self.kinds, **raw)
        self.by_campaign = app.topic(
            by_campaign_topic(s), partitions=self.partitions, internal=True, **raw
        )
        # what the agents consume (not the tables' changelogs)
        self.consumed_topics = (*self.kinds, by_campaign_topic(s))
        self.dead_topic = app.topic(s.topics.dead_letters, **raw)
        self.late_topic = app.topic(s.topics.late, **raw)
        self.state = app_table(app, "ingest-state", partitions=self.partitions)
        # Values are panes in their binary form (``PaneState.encode``): raw bytes to Faust.
        self.windows = app_table(app, "kpi-windows", partitions=self.partitions, value_type=bytes)
        batch, within = s.worker.batch_max_events, s.worker.batch_within_seconds

        @app.agent(self.source, name="ingest")
        async def ingest(stream: faust.StreamT[bytes]) -> None:
            async for events in stream.take_events(batch, within=within):
                self.last_delivered_at = time.monotonic()
                async with self._ingest_lock:
                    with contextlib.suppress(BatchAbandoned):
                        await self.handle_ingest([record_of(e.message) for e in events])

        @app.agent(self.by_campaign, name="aggregate")
        async def aggregate(stream: faust.StreamT[bytes]) -> None:
            async for events in stream.take_events(batch, within=within):
                self.last_delivered_at = time.monotonic()
                async with self._aggregate_lock:
                    with contextlib.suppress(BatchAbandoned):
                        await self.handle_aggregate([record_of(e.message) for e in events])

    # -- reading the assigned partitions ------------------------------------------------
    # Faust assigns the partitions (group membership) and recovers the tables; the worker
    # reads the messages itself, a batch at a time (``_feed``): Faust hands messages over one
    # by one, with an event, an acknowledgement and queue steps around each, which took a
    # quarter of the worker's time. Its agents still take what Faust fetches before the feed
    # pauses it, through the same handlers, so either path gives the same result.
    def start_feeds(self) -> list[asyncio.Task[None]]:
        """One task per stage reading its assigned partitions; stop them by cancelling."""
        return [
            asyncio.create_task(
                self._feed("ingest", set(self.kinds), self.handle_ingest, self._ingest_lock)
            ),
            asyncio.create_task(
                self._feed(
                    "aggregate",
                    {self.by_campaign.get_topic_name()},
                    self.handle_aggregate,
                    self._aggregate_lock,
                )
            ),
        ]

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

    async def _feed(
        self,
        stage: str,
        topics: set[str],
        handle: Callable[[Sequence[Record]], Awaitable[None]],
        lock: asyncio.Lock,
    ) -> None:
        """Hand ``handle`` batches of the assigned partitions of ``topics``, each from where
        its state says (``_start``), re-positioned after every rebalance. A batch fetched
        before a rebalance is dropped; one under way holds the rebalance (``_on_revoked``).
        A failure crashes the worker, which then processes the batch again on restart."""
        feed = PartitionFeed(self.settings.kafka, self.settings.worker.batch_max_events, stage)
        synced = -1  # the rebalance the feed is positioned for; -1: position it again
        try:
            while True:
                if synced != self.app.rebalancing_count or not self.settled():
                    positioned = False
                    async with lock:
                        # The count first: Faust flags a rebalance before it counts it, so
                        # a rebalance starting between the two reads is seen next round.
                        count = self.app.rebalancing_count
                        if self.settled():
                            try:
                                await self._position(feed, topics)
                                synced, positioned = count, True
                            except (KafkaError, TimeoutError) as exc:
                                log.warning("%s: could not position the feed: %s", stage, exc)
                    if not positioned:
                        # Always a real wait: taking a free asyncio lock does not yield, so
                        # looping straight back would starve the loop, and with it the
                        # other stage's ClickHouse retry that would end the outage.
                        await asyncio.sleep(_FEED_WAIT_MS / 1000)
                    continue
                try:
                    records = await feed.fetch(_FEED_WAIT_MS)
                except (KafkaError, TimeoutError) as exc:
                    log.warning("%s: could not fetch, positioning again: %s", stage, exc)
                    synced = -1
                    continue
                if not records:
                    continue
                async with lock:
                    if synced != self.app.rebalancing_count or not self.settled():
                        # Fetched before the assignment changed or while ClickHouse is
                        # down: dropped, and read again from where the state says.
                        synced = -1
                        continue
                    self.last_delivered_at = time.monotonic()
                    try:
                        await handle(records)
                    except BatchAbandoned:
                        synced = -1  # read again from where the state says, if still ours
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s: reading or processing a batch failed", stage)
            await self.app.crash(exc)
        finally:
            await feed.stop()

    async def _position(self, feed: PartitionFeed, topics: set[str]) -> None:
        """Point ``feed`` at the assigned partitions of ``topics``, each at the first offset
        to process (the replay start until a batch of it was handled since the rebalance),
        and stop Faust fetching them: it resumes them after every recovery."""
        tps = [(tp.topic, tp.partition) for tp in self.app.consumer.assignment()]
        tps = sorted(tp for tp in tps if tp[0] in topics)
        self.app.consumer.pause_partitions([TP(t, p) for t, p in tps])
        starts = {(t, p): await self._start(t, p, replay=self._replaying(t, p)) for t, p in tps}
        costs = [tp for tp in tps if self.kinds.get(tp[0]) == WATERMARK_KINDS[2]]
        if costs:
            ends = await self.direct.ends(costs)
            self._costs_waiting = {
                p for t, p in costs if self.next_unseen(t, p) is None and ends[(t, p)] > 0
            }
        await feed.assign(starts)

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
        tables = {
            self.state.name: set(self.kinds),
            self.windows.name: {self.by_campaign.get_topic_name()},
        }
        ours = {(tp.topic, tp.partition) for tp in assigned}
        for name, partition in list(self._unwritten):
            if not any((topic, partition) in ours for topic in tables[name]):
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

    # -- consecutive offsets ------------------------------------------------------------
    # Each stage processes a partition as consecutive offsets, from where its state says,
    # whatever Faust delivers: offsets it did not deliver are read directly, offsets the
    # state has already taken for good are dropped. Faust's committed offsets only say
    # where its own fetching starts.
    def _positions(self, topic: str, partition: int) -> tuple[int | None, int | None]:
        """(where a replay starts, first offset the state has not seen) for a consumed
        partition; ``None`` for the start of the partition."""
        if topic in self.kinds:
            src = f"{self.kinds[topic]}:{partition}"
            clock = PartitionClock.from_state(table_dict(self.state, partition).get(clock_key(src)))
            return clock.replay_from(), clock.next_offset()
        if topic != self.by_campaign.get_topic_name():
            return None, None
        stored = table_dict(self.windows, partition).get(position_key(partition))
        return decode_position(stored) if stored is not None else (None, None)

    def next_unseen(self, topic: str, partition: int) -> int | None:
        """The first offset of a consumed partition its state has not seen (``None``: the
        state has seen none)."""
        return self._positions(topic, partition)[1]

    async def _start(self, topic: str, partition: int, *, replay: bool = False) -> int:
        """The first offset to process next: the first unseen one, or with ``replay`` the
        first of the last batch, which a crash may have left half persisted."""
        replay_from, unseen = self._positions(topic, partition)
        start = replay_from if replay else unseen
        if start is None:
            start = await self.direct.beginning(topic, partition)
        return start

    def _since_rebalance(self) -> None:
        """Forget what this process did before the latest rebalance."""
        if self._rebalance_seen != self.app.rebalancing_count:
            self._rebalance_seen = self.app.rebalancing_count
            self._handled.clear()
            self._beaten.clear()

    def _replaying(self, topic: str, partition: int) -> bool:
        """True until this process has handled a batch of the partition since the last
        rebalance: until then its state came from the changelog and may hold only part of
        the last batch's changes, so that batch is processed again."""
        self._since_rebalance()
        return (topic, partition) not in self._handled

    async def _consecutive(self, records: list[Record]) -> list[Record]:
        """``records`` of one partition as consecutive ascending offsets from ``_start``
        to the last delivered: below it dropped, missing ones read directly."""
        topic, partition = records[0].topic, records[0].partition
        replay = self._replaying(topic, partition)
        start = await self._start(topic, partition, replay=replay)
        records = sorted((r for r in records if r.offset >= start), key=lambda r: r.offset)
        if not records:
            return records
        self._handled.add((topic, partition))
        self.last_progress_at = time.monotonic()
        ranges = missing_ranges(start, [r.offset for r in records])
        if not ranges:
            return records
        for first, stop in ranges:
            # Expected on every start and rebalance: Faust fetches until the feed pauses
            # it, then hands over (counted in ``socialroi_gap_reads``).
            log.info(
                "%s[%d]: offsets %d..%d were not delivered; reading them directly",
                topic,
                partition,
                first,
                stop - 1,
            )
            self.metrics.gap_reads.inc()
            records += await self._read_retrying(topic, partition, first, stop)
        records.sort(key=lambda r: r.offset)
        return records

    async def _read_retrying(
        self, topic: str, partition: int, start: int, stop: int
    ) -> list[Record]:
        """A direct read inside a batch: retried a few times, then the batch fails (and is
        processed again after the worker restarts)."""
        attempt = 1
        while True:
            try:
                return await self.direct.read(topic, partition, start, stop)
            except (KafkaError, TimeoutError) as exc:
                if attempt >= _READ_ATTEMPTS:
                    raise
                log.warning("could not read %s[%d] directly, retrying: %s", topic, partition, exc)
                attempt += 1
                await asyncio.sleep(1.0)

    async def behind(
        self, ends: dict[tuple[str, int], int] | None = None
    ) -> list[tuple[str, int, int, int]]:
        """Assigned partitions holding messages beyond what their state has seen, as
        (topic, partition, first unseen offset, end offset). ``ends``: end offsets already
        read (at least of the assigned partitions), else they are read here."""
        assigned = sorted(
            (tp.topic, tp.partition)
            for tp in self.app.consumer.assignment()
            if tp.topic in self.consumed_topics
        )
        if ends is None:
            ends = await self.direct.ends(assigned)
        found = []
        for topic, partition in assigned:
            start = await self._start(topic, partition)
            if ends[(topic, partition)] > start:
                found.append((topic, partition, start, ends[(topic, partition)]))
        return found

    async def drained(self) -> bool:
        """The whole group is done: this worker holds partitions and its state has seen
        every message in them, and every partition of the consumed topics (also those
        another member holds, or a member that died and has not yet been expelled) is
        committed up to its end."""
        if not self.settled() or not self.app.consumer.assignment():
            return False
        every = [(t, p) for t in self.consumed_topics for p in range(self.partitions)]
        try:
            ends = await self.direct.ends(every)
            if await self.behind(ends):
                return False
            committed = await self.direct.committed(every)
        except (KafkaError, TimeoutError) as exc:  # asked again on the next round
            log.warning("could not compare committed and end offsets: %s", exc)
            return False
        return all((committed[tp] or 0) >= end for tp, end in ends.items())

    async def _commit_seen(self, tps: Iterable[tuple[str, int]]) -> None:
        """Commit, for each partition, the first offset its state has not seen.

        Faust commits only up to the first offset it did not deliver itself, so after it
        skipped a message its commits stop moving while the worker goes on: the group's
        offsets would then say work remains that is done, and a restart would replay it
        all. Done through Faust's own commit step, which then never moves back, and one
        commit at a time as Faust's are (``_commit_fut``): a commit of Faust's computes its
        offsets before it awaits, so one in flight would land after ours, lower."""
        consumer = self.app.consumer
        while consumer._commit_fut is not None:
            await consumer.maybe_wait_for_commit_to_finish()
            await asyncio.sleep(0)  # a cancelled commit is cleared by its own coroutine
        offsets = {}
        for topic, partition in tps:
            unseen = self.next_unseen(topic, partition)
            tp = TP(topic, partition)
            committed = consumer._committed_offset.get(tp)
            if unseen is not None and (committed is None or unseen > committed):
                offsets[tp] = unseen
        if not offsets:
            return
        # Faust's commits meanwhile wait for this one, then commit nothing lower.
        consumer._commit_fut = fut = asyncio.get_running_loop().create_future()
        try:
            await consumer._commit_offsets(offsets)
        finally:
            consumer._commit_fut = None
            if not fut.done():
                fut.set_result(None)

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
                records = await self._consecutive(tp_records)
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
        await self._deliver(sent + packs.messages() + beats)
        async with self._keeping_unwritten(stores):
            await self.sink.write(dead_letters=dead, credits=credits, raw=raw, campaigns=campaigns)
        await self._write_changelogs(stores)
        await self._commit_seen({(r.topic, r.partition) for r in delivered})
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
        self.metrics.consumed.labels(topic, "ingest").inc(len(records))
        by_offset = {r.offset: r for r in records}
        result = self.ingestor.run(
            kind, partition, [Message(r.offset, r.value) for r in records], store, now_ms
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
                kafka_ts_ms=msg.timestamp_ms,
                payload=(msg.value or b"")[:limit],
            )
            dead.append(row)
            self.metrics.dead_letters.labels(rejection.reason.value).inc()
            sent.append((self.dead_topic.get_topic_name(), msg.key, _dead_letter_json(row), None))
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
        self._since_rebalance()
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
        if time.monotonic() - self.last_delivered_at < _BEAT_IDLE_SECONDS or not self.settled():
            return
        async with self._ingest_lock:
            self._since_rebalance()
            partitions = {
                tp.partition for tp in self.app.consumer.assignment() if tp.topic in self.kinds
            }
            sent: Sent = []
            for partition in sorted(partitions):
                marks = self._watermarks(partition).items()
                if any(self._beaten.get(src) != watermark for src, watermark in marks):
                    sent += self._heartbeats(partition)
            await self._deliver(sent)

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
            records = await self._consecutive(part_records)
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
        await self._commit_seen({(r.topic, r.partition) for r in delivered})
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
        last_offsets = await self._deliver([m for store in stores for m in store.flush()])
        for store in stores:
            store.persist(last_offsets)

    async def _deliver(self, sent: Sent) -> dict[tuple[str, int], int]:
        """Send, and wait until Kafka acknowledged every message; a failed send raises (the
        batch is then not acknowledged and will be processed again). Returns the offset of
        the last message sent to each (topic, partition) named in ``sent``.

        Straight to the aiokafka producer under Faust, in record batches built here per
        partition (``create_batch``/``send_batch``): Faust's own buffer sends one message at
        a time with bookkeeping around each, a few thousand per second, and even aiokafka's
        ``send`` costs a future and a lookup per message, while stage two writes thousands
        of changelog messages per batch. A message without a partition (the producer picks
        it from the key) goes through ``send``. Messages keep their order per partition."""
        if not sent:
            return {}
        faust_producer = self.app.producer
        producer = faust_producer._ensure_producer()  # the AIOKafkaProducer it wraps
        by_tp: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = defaultdict(list)
        futures = []
        batches = []  # (future of a record batch's base offset, its record count)
        for topic, key, value, partition in sent:
            if partition is None:
                futures.append(await faust_producer.send(topic, key, value, None, None, None))
            else:
                by_tp[(topic, partition)].append((key, value))
        for (topic, partition), messages in by_tp.items():
            batch = producer.create_batch()
            for key, value in messages:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    # Full: send it, go on in a new one, which takes any first message (one
                    # too large for the broker fails there, and the batch with it).
                    count = batch.record_count()
                    batches.append(
                        (await producer.send_batch(batch, topic, partition=partition), count)
                    )
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            if count := batch.record_count():
                batches.append(
                    (await producer.send_batch(batch, topic, partition=partition), count)
                )
        await asyncio.gather(*futures, *(future for future, _ in batches))
        last: dict[tuple[str, int], int] = {}
        for future, count in batches:
            meta = future.result()
            end = meta.offset + count - 1
            tp = (meta.topic, meta.partition)
            last[tp] = max(last.get(tp, end), end)
        return last

    def _batch_done(self, stage: str, size: int, began: float) -> None:
        self.metrics.batch_size.labels(stage).observe(size)
        self.metrics.batch_seconds.labels(stage).observe(time.perf_counter() - began)
        self.batches += 1


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
