"""Consecutive offsets: where each stage stands in each partition it consumes.

Each stage processes a partition as consecutive offsets, from where its state says, whatever
Faust delivers: offsets it did not deliver are read directly, offsets the state has already
taken for good are dropped. Faust's committed offsets only say where its own fetching starts;
the worker commits, after every batch, the first offset its state has not seen.

Where the state stands is the worker's to say (``positions``: the replay start and the first
offset not seen, from the partition's state); this module decides from it which records a
batch covers, whether a partition is drained, and what to commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import cast

import faust
from aiokafka.errors import KafkaError
from faust.transport.consumer import Consumer
from faust.types import TP

from pipeline.gaps import missing_ranges
from streams.direct import DirectReader, Record
from streams.metrics import Metrics

__all__ = ["Offsets", "Positions"]

log = logging.getLogger(__name__)

# (where a replay starts, first offset the state has not seen) of a consumed partition;
# ``None`` for the start of the partition.
Positions = Callable[[str, int], tuple[int | None, int | None]]
_READ_ATTEMPTS = 5


class Offsets:
    """The consumed partitions' offsets for one worker process."""

    def __init__(
        self,
        app: faust.App,
        direct: DirectReader,
        metrics: Metrics,
        positions: Positions,
        consumed_topics: tuple[str, ...],
        partitions: int,
    ) -> None:
        self.app = app
        self.direct = direct
        self.metrics = metrics
        self.positions = positions
        self.consumed_topics = consumed_topics
        self.partitions = partitions
        self.last_progress_at = time.monotonic()  # a batch reached offsets not seen before
        # Forgotten at every rebalance (``since_rebalance``): the (topic, partition) pairs
        # handled since (``replaying``), and whatever the callbacks forget.
        self._handled: set[tuple[str, int]] = set()
        self._rebalance_seen = -1
        self.on_rebalance: list[Callable[[], None]] = []

    def since_rebalance(self) -> None:
        """Forget what this process did before the latest rebalance."""
        if self._rebalance_seen != self.app.rebalancing_count:
            self._rebalance_seen = self.app.rebalancing_count
            self._handled.clear()
            for forget in self.on_rebalance:
                forget()

    def replaying(self, topic: str, partition: int) -> bool:
        """True until this process has handled a batch of the partition since the last
        rebalance: until then its state came from the changelog and may hold only part of
        the last batch's changes, so that batch is processed again."""
        self.since_rebalance()
        return (topic, partition) not in self._handled

    def next_unseen(self, topic: str, partition: int) -> int | None:
        """The first offset of a consumed partition its state has not seen (``None``: the
        state has seen none)."""
        return self.positions(topic, partition)[1]

    async def start(self, topic: str, partition: int, *, replay: bool = False) -> int:
        """The first offset to process next: the first unseen one, or with ``replay`` the
        first of the last batch, which a crash may have left half persisted."""
        replay_from, unseen = self.positions(topic, partition)
        start = replay_from if replay else unseen
        if start is None:
            start = await self.direct.beginning(topic, partition)
        return start

    async def consecutive(self, records: list[Record]) -> list[Record]:
        """``records`` of one partition as consecutive ascending offsets from ``start`` to
        the last delivered: below it dropped, missing ones read directly."""
        topic, partition = records[0].topic, records[0].partition
        replay = self.replaying(topic, partition)
        start = await self.start(topic, partition, replay=replay)
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
            start = await self.start(topic, partition)
            if ends[(topic, partition)] > start:
                found.append((topic, partition, start, ends[(topic, partition)]))
        return found

    async def drained(self) -> bool:
        """The whole group is done: this worker holds partitions and its state has seen
        every message in them, and every partition of the consumed topics (also those
        another member holds, or a member that died and has not yet been expelled) is
        committed up to its end."""
        if not self.app.consumer.assignment():
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

    async def commit_seen(self, tps: Iterable[tuple[str, int]]) -> None:
        """Commit, for each partition, the first offset its state has not seen.

        Faust commits only up to the first offset it did not deliver itself, so after it
        skipped a message its commits stop moving while the worker goes on: the group's
        offsets would then say work remains that is done, and a restart would replay it
        all. Done through Faust's own commit step, which then never moves back, and one
        commit at a time as Faust's are (``_commit_fut``): a commit of Faust's computes its
        offsets before it awaits, so one in flight would land after ours, lower."""
        consumer = cast(Consumer, self.app.consumer)  # the commit step is not on ConsumerT
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
