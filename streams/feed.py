"""Reading the assigned partitions: one feed per stage, a batch at a time.

Faust assigns the partitions (group membership) and recovers the tables; the worker reads
the messages itself (:class:`Feed`): Faust hands messages over one by one, with an event, an
acknowledgement and queue steps around each, which took a quarter of the worker's time.
Faust's agents still take what Faust fetches before a feed pauses it, through the same
handlers, so either path gives the same result (:mod:`streams.offsets` decides which
offsets a batch covers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import faust
from aiokafka.errors import KafkaError
from faust.types import TP

from pipeline.settings import KafkaSettings
from streams.batch_io import BatchAbandoned
from streams.direct import PartitionFeed, Record
from streams.offsets import Offsets

__all__ = ["Feed"]

log = logging.getLogger(__name__)
# How long a feed waits for messages before it looks at the assignment again.
FEED_WAIT_MS = 200

Handler = Callable[[Sequence[Record]], Awaitable[None]]


class Feed:
    """Hands ``handle`` batches of the assigned partitions of ``topics``, each from where
    its state says (``Offsets.start``), re-positioned after every rebalance. A batch fetched
    before a rebalance is dropped; one under way holds the rebalance (the worker's
    ``_on_revoked`` takes ``lock``). A failure crashes the app, and the worker then
    processes the batch again on restart.

    ``positioned`` is told the partitions a positioning assigned, before the feed reads
    them; ``delivered`` is called when a batch reaches its handler."""

    def __init__(
        self,
        stage: str,
        topics: set[str],
        handle: Handler,
        lock: asyncio.Lock,
        *,
        app: faust.App,
        kafka: KafkaSettings,
        batch_max_events: int,
        offsets: Offsets,
        settled: Callable[[], bool],
        delivered: Callable[[], None],
        positioned: Callable[[list[tuple[str, int]]], Awaitable[None]] | None = None,
    ) -> None:
        self.stage = stage
        self.topics = topics
        self.handle = handle
        self.lock = lock
        self.app = app
        self.kafka = kafka
        self.batch_max_events = batch_max_events
        self.offsets = offsets
        self.settled = settled
        self.delivered = delivered
        self.positioned = positioned

    async def run(self) -> None:
        """Read until cancelled."""
        stage, app, lock = self.stage, self.app, self.lock
        feed = PartitionFeed(self.kafka, self.batch_max_events, stage)
        synced = -1  # the rebalance the feed is positioned for; -1: position it again
        try:
            while True:
                if synced != app.rebalancing_count or not self.settled():
                    positioned = False
                    async with lock:
                        # The count first: Faust flags a rebalance before it counts it, so
                        # a rebalance starting between the two reads is seen next round.
                        count = app.rebalancing_count
                        if self.settled():
                            try:
                                await self._position(feed)
                                synced, positioned = count, True
                            except (KafkaError, TimeoutError) as exc:
                                log.warning("%s: could not position the feed: %s", stage, exc)
                    if not positioned:
                        # Always a real wait: taking a free asyncio lock does not yield, so
                        # looping straight back would starve the loop, and with it the
                        # other stage's ClickHouse retry that would end the outage.
                        await asyncio.sleep(FEED_WAIT_MS / 1000)
                    continue
                try:
                    records = await feed.fetch(FEED_WAIT_MS)
                except (KafkaError, TimeoutError) as exc:
                    log.warning("%s: could not fetch, positioning again: %s", stage, exc)
                    synced = -1
                    continue
                if not records:
                    continue
                async with lock:
                    if synced != app.rebalancing_count or not self.settled():
                        # Fetched before the assignment changed or while ClickHouse is
                        # down: dropped, and read again from where the state says.
                        synced = -1
                        continue
                    self.delivered()
                    try:
                        await self.handle(records)
                    except BatchAbandoned:
                        synced = -1  # read again from where the state says, if still ours
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s: reading or processing a batch failed", stage)
            await app.crash(exc)
        finally:
            await feed.stop()

    async def _position(self, feed: PartitionFeed) -> None:
        """Point ``feed`` at the assigned partitions of the topics, each at the first offset
        to process (the replay start until a batch of it was handled since the rebalance),
        and stop Faust fetching them: it resumes them after every recovery."""
        offsets = self.offsets
        tps = [(tp.topic, tp.partition) for tp in self.app.consumer.assignment()]
        tps = sorted(tp for tp in tps if tp[0] in self.topics)
        self.app.consumer.pause_partitions([TP(t, p) for t, p in tps])
        starts = {(t, p): await offsets.start(t, p, replay=offsets.replaying(t, p)) for t, p in tps}
        if self.positioned is not None:
            await self.positioned(tps)
        await feed.assign(starts)
