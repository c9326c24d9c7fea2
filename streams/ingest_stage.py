"""Stage one's batches in the worker: source partitions (co-partitioned by user) through
``pipeline.stage_one``, out to the dead-letter, late and repartition topics, the raw-event,
skipped-event, credit and campaign rows to ClickHouse, the state to its changelog.

After each batch, every stage-two partition gets a heartbeat with each source partition's
watermark (:func:`source_watermarks`), after the batch's contributions (same producer, so in
order). The order of a batch's writes is the worker's (``streams.worker``).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from pipeline.contract import Contract
from pipeline.ingest import NO_TIME, PartitionClock, ServiceCosts, as_record
from pipeline.kpi import MICROS
from pipeline.money import Rates
from pipeline.ports import CampaignRow, CreditRow, DeadLetterRow, RawEventRow, SkippedEventRow
from pipeline.settings import Settings
from pipeline.stage_one import (
    WATERMARK_KINDS,
    WEB,
    Ingestor,
    Message,
    clock_key,
    held_conversions_from,
)
from streams.app import CompactedTable
from streams.batch_io import Batches, Packs, PartitionStore, Sent, deliver, table_dict
from streams.dead_letters import COLLECTED_KIND, collected_letters, dead_letter_message
from streams.direct import DirectReader, Record
from streams.offsets import Offsets
from streams.producer import by_campaign_topic, topic_for_kind

__all__ = ["IngestStage", "ingest_topics", "source_watermarks"]

COSTS = WATERMARK_KINDS[2]


def ingest_topics(settings: Settings) -> dict[str, str]:
    """The topics stage one reads, by name, and their kinds: the four ingest topics, and the
    dead-letter topic for the HTTP collector's letters (:data:`COLLECTED_KIND`)."""
    kinds = {name: kind for kind, name in topic_for_kind(settings).items()}
    kinds[settings.topics.dead_letters] = COLLECTED_KIND
    return kinds


def source_watermarks(
    get: Callable[[str], Any], partition: int, lateness_ms: int, costs_waiting: set[int]
) -> dict[str, int | None]:
    """Watermark of each source partition ``partition`` that has seen an event (``get``
    reads the partition's state), and ``NO_TIME`` for a cost partition with messages
    waiting but none read yet (``costs_waiting``; ``None`` once they are read and none had
    an event time: the hold is released). A web partition's is held below the earliest
    conversion it still holds (:func:`pipeline.stage_one.held_conversions_from`).

    A cost partition counts for finality from its first event on (one that never has an
    event must not hold windows open for ever). But one read late, after a restart or while
    the feed drains a backlog of other partitions first, would let the final watermark run
    past the costs it holds: their panes would be finished and dropped before the costs
    arrive. Announcing it as not started holds finality until it is read."""
    found: dict[str, int | None] = {}
    for kind in WATERMARK_KINDS:
        src = f"{kind}:{partition}"
        clock = PartitionClock.from_state(get(clock_key(src)))
        latest = clock.latest()
        mark: int | None = latest - lateness_ms
        if latest == NO_TIME:
            if kind != COSTS or partition not in costs_waiting:
                continue
            mark = NO_TIME if clock.next_offset() is None else None
        elif kind == WEB:
            # never past a conversion still held: its panes must stay open for its credit
            held = held_conversions_from(get, partition)
            if held is not None and mark is not None:
                mark = min(mark, held - 1)
        found[src] = mark
    return found


class IngestStage:
    """Stage one of one worker process: its batch handler (:meth:`handle`), heartbeats,
    and where its state stands in each source partition (:meth:`positions`)."""

    def __init__(
        self,
        settings: Settings,
        state: CompactedTable,
        batches: Batches,
        offsets: Offsets,
        direct: DirectReader,
    ) -> None:
        costs, attribution = settings.costs, settings.attribution
        self.state = state
        self.batches = batches
        self.offsets = offsets
        self.direct = direct
        self.metrics = batches.metrics
        self.partitions = settings.kafka.partitions
        self.lateness_ms = settings.windows.allowed_lateness_seconds * 1000
        self.kinds = ingest_topics(settings)
        self.by_campaign = by_campaign_topic(settings)
        self.dead_topic = settings.topics.dead_letters
        self.late_topic = settings.topics.late
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
        self.lock = asyncio.Lock()  # one batch at a time, whichever path delivers it
        # the rebalance count at which each partition's touches were indexed
        self._touches_indexed: dict[int, int] = {}
        # Cost partitions (numbers) with messages but no event read yet, as of the last
        # positioning of the feed (see ``source_watermarks``).
        self.costs_waiting: set[int] = set()
        # Per source partition, the watermark last sent since the last rebalance (beat).
        self._beaten: dict[str, int | None] = {}
        offsets.on_rebalance.append(self._beaten.clear)

    def positions(self, topic: str, partition: int) -> tuple[int | None, int | None]:
        """(where a replay starts, first offset the state has not seen) of a source
        partition, from its clock; ``None`` for the start of the partition."""
        src = f"{self.kinds[topic]}:{partition}"
        clock = PartitionClock.from_state(table_dict(self.state, partition).get(clock_key(src)))
        return clock.replay_from(), clock.next_offset()

    async def costs_positioned(self, tps: list[tuple[str, int]]) -> None:
        """Note the cost partitions with messages but no event read yet."""
        costs = [tp for tp in tps if self.kinds.get(tp[0]) == COSTS]
        if costs:
            ends = await self.direct.ends(costs)
            self.costs_waiting = {
                p for t, p in costs if self.offsets.next_unseen(t, p) is None and ends[(t, p)] > 0
            }

    async def handle(self, delivered: Sequence[Record]) -> None:
        began = time.perf_counter()
        now_ms = int(time.time() * 1000)
        by_partition: dict[int, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
        for record in delivered:
            by_partition[record.partition][record.topic].append(record)
        count = 0
        sent: Sent = []
        beats: Sent = []
        packs = Packs(self.by_campaign, self.partitions)
        dead: list[DeadLetterRow] = []
        credits: list[CreditRow] = []
        raw: list[RawEventRow] = []
        campaigns: list[CampaignRow] = []
        skipped: list[SkippedEventRow] = []
        stores = []
        for partition, by_topic in by_partition.items():
            store = self.batches.store(self.state, partition)
            stores.append(store)
            rebalances = self.batches.app.rebalancing_count
            if self._touches_indexed.get(partition) != rebalances:
                # Once per partition after each rebalance, before its first batch: the
                # users whose touches expire (a memory store's dict holds every partition).
                self._touches_indexed[partition] = rebalances
                shared = None if self.state.persistent else self.partitions
                live = table_dict(self.state, partition).items()
                self.ingestor.index_touches(partition, live, shared)
            for topic, tp_records in by_topic.items():
                records = await self.offsets.consecutive(tp_records)
                if not records:
                    continue
                count += len(records)
                dead += self._slice(
                    topic, partition, records, store, now_ms, sent, packs, raw, campaigns, skipped
                )
            release = self.ingestor.release(partition, store)
            for offset, forward in release.forwards:
                packs.add(as_record(forward, release.src, offset, NO_TIME))
            credits += release.rows
            beats += self._heartbeats(self._marks(partition, store.get))
        # Every stage-two partition gets this batch's contributions before its heartbeats.
        await deliver(self.batches.app, sent + packs.messages() + beats)
        async with self.batches.keeping_unwritten(stores):
            await self.batches.sink.write(
                dead_letters=dead, credits=credits, raw=raw, campaigns=campaigns, skipped=skipped
            )
        await self.batches.write_changelogs(stores)
        await self.offsets.commit_seen({(r.topic, r.partition) for r in delivered})
        self.batches.done("ingest", count, began)

    def _slice(
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
        skipped: list[SkippedEventRow],
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
            sent.append((self.dead_topic, msg.key, _dead_letter_json(row, msg.key), None))
        for offset, event, watermark in result.late:
            msg = by_offset[offset]
            late = {
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "event_id": event.event_id,
                "event_time_ms": event.ts_ms,
                "watermark_ms": watermark,
                "payload_b64": base64.b64encode(msg.value or b"").decode(),
            }
            sent.append((self.late_topic, msg.key, orjson.dumps(late), None))
        self.metrics.late.labels(topic).inc(len(result.late))
        self.metrics.duplicates.labels(topic).inc(len(result.duplicates))
        skipped += result.skipped(topic, partition)
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

    def _marks(self, partition: int, get: Callable[[str], Any]) -> dict[str, int | None]:
        """The watermarks ``partition``'s source partitions announce (``get`` reads its
        state)."""
        return source_watermarks(get, partition, self.lateness_ms, self.costs_waiting)

    def _heartbeats(self, marks: dict[str, int | None]) -> Sent:
        """Tell every stage-two partition how far each source partition has got (``marks``),
        after everything this batch sent for it (same producer, so in order)."""
        self.offsets.since_rebalance()
        sent: Sent = []
        for src, watermark in marks.items():
            self._beaten[src] = watermark
            beat = orjson.dumps({"hb": 1, "src": src, "wm": watermark})
            sent += [(self.by_campaign, None, beat, target) for target in range(self.partitions)]
        return sent

    async def beat(self) -> None:
        """Send heartbeats for assigned source partitions whose watermark this process has
        not sent since the last rebalance. Stage two keeps what it heard in memory only, so
        after a restart or a rebalance it needs them again even when no new event comes."""
        async with self.lock:
            self.offsets.since_rebalance()
            partitions = {
                tp.partition
                for tp in self.batches.app.consumer.assignment()
                if tp.topic in self.kinds
            }
            sent: Sent = []
            for partition in sorted(partitions):
                marks = self._marks(partition, table_dict(self.state, partition).get)
                if any(self._beaten.get(src) != mark for src, mark in marks.items()):
                    sent += self._heartbeats(marks)
            await deliver(self.batches.app, sent)


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
