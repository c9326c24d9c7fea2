"""Stage two's batches in the worker: the repartition topic (keyed by campaign) through
``pipeline.stage_two``, pane rows and watermarks to ClickHouse, the panes to their changelog.

Panes record the source offsets they include (one pane per pane size per event; the reader
views compose hopping windows from them); a pane whose end every source watermark has passed
is written once more as final, and leaves the state an allowed lateness later. The order of a
batch's writes is the worker's (``streams.worker``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from pipeline.aggregate import Contribution
from pipeline.ingest import NO_TIME
from pipeline.ports import WatermarkRow
from pipeline.settings import Settings
from pipeline.stage_one import WATERMARK_KINDS
from pipeline.stage_two import (
    Aggregator,
    decode_position,
    encode_position,
    heard_key,
    position_key,
)
from pipeline.windows import specs_from_settings
from streams.app import CompactedTable
from streams.batch_io import Batches, PartitionStore, campaign_partition, table_dict
from streams.direct import Record
from streams.offsets import Offsets
from streams.producer import by_campaign_topic

__all__ = ["AggregateStage"]


class AggregateStage:
    """Stage two of one worker process: its batch handler (:meth:`handle`) and where its
    state stands in each partition of the repartition topic (:meth:`positions`)."""

    def __init__(
        self, settings: Settings, windows: CompactedTable, batches: Batches, offsets: Offsets
    ) -> None:
        self.windows = windows
        self.batches = batches
        self.offsets = offsets
        self.metrics = batches.metrics
        self.partitions = settings.kafka.partitions
        self.topic = by_campaign_topic(settings)
        specs = specs_from_settings(settings.windows.tumbling_seconds, settings.windows.hopping)
        traffic = [f"{k}:{p}" for k in WATERMARK_KINDS[:2] for p in range(self.partitions)]
        self.stage_two = Aggregator(
            specs,
            settings.windows.allowed_lateness_seconds * 1000,
            traffic,
            functools.partial(campaign_partition, partitions=self.partitions),
        )
        self.lock = asyncio.Lock()  # one batch at a time, whichever path delivers it
        # In memory: watermarks heard per partition; the partitions whose panes are indexed
        # since the last rebalance; the watermark last written per partition.
        self._heard: dict[int, dict[str, int]] = defaultdict(dict)
        self._indexed: set[int] = set()
        self._indexed_rebalance = -1
        self._marked: dict[int, int] = {}

    def positions(self, partition: int) -> tuple[int | None, int | None]:
        """(where a replay starts, first offset the state has not seen) of a partition of
        the repartition topic; ``None`` for the start of the partition."""
        stored = table_dict(self.windows, partition).get(position_key(partition))
        return decode_position(stored) if stored is not None else (None, None)

    async def handle(self, delivered: Sequence[Record]) -> None:
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
            unseen = self.offsets.next_unseen(self.topic, partition) or 0
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
        self.metrics.consumed.labels(self.topic, "aggregate").inc(count)
        stores: dict[int, PartitionStore] = {}

        def store_for(part: int) -> PartitionStore:
            store = stores.get(part)
            if store is None:
                store = stores[part] = self.batches.store(self.windows, part)
            return store

        sources = {part: self._heard[part] for part in positions}
        snapshots, replays, watermarks = self.stage_two.batch(items, store_for, sources)
        self.metrics.replays_skipped.inc(replays)
        marks = []
        for part, (first, unseen) in positions.items():
            store = store_for(part)
            watermark = watermarks[part]
            if watermark != NO_TIME:
                self.metrics.watermark.set(watermark / 1000)
                if watermark > self._marked.get(part, NO_TIME):
                    marks.append(WatermarkRow(part, self.partitions, watermark))
            # Kept with the panes, so a worker taking the partition over knows them too.
            store.put(position_key(part), encode_position(first, unseen))
            store.put(heard_key(part), orjson.dumps(self._heard[part]))
        # Panes, then watermarks (the sink writes them in that order), then the changelog.
        async with self.batches.keeping_unwritten(stores.values()):
            await self.batches.sink.write(snapshots=snapshots, watermarks=marks)
        for mark in marks:
            self._marked[mark.partition] = mark.watermark_ms
        await self.batches.write_changelogs(stores.values())
        await self.offsets.commit_seen({(r.topic, r.partition) for r in delivered})
        if items:
            self.metrics.freshness.set(max(i.ts_ms for i in items) / 1000)
        self.batches.done("aggregate", count, began)

    def _index_panes(self, partitions: Iterable[int]) -> None:
        """Index the panes of each partition once after every rebalance (a partition taken
        over from another worker arrives with its recovered panes), and take up the
        watermarks its state had heard: without them, a restarted worker that has heard
        again from every traffic partition but not yet from a lagging cost partition would
        compute a final watermark past that partition's, and finish (then drop) panes its
        next contributions still belong to."""
        rebalances = self.batches.app.rebalancing_count
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
