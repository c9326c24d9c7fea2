"""The Faust worker: the wiring of two stages, each thin around the pure core.

``ingest`` (source partitions, co-partitioned by user; ``streams.ingest_stage``):
``pipeline.stage_one`` validates, dead-letters, decides lateness, drops duplicates, keeps
touchpoints and credits conversions; the stage repartitions contributions by campaign and,
after each batch, sends every stage-two partition a heartbeat with each source partition's
watermark. It reads the dead-letter topic too, for the HTTP collector's letters: they go to
the ``dead_letters`` table.

``aggregate`` (keyed by campaign; ``streams.aggregate_stage``): ``pipeline.stage_two`` folds
contributions into panes and decides their finality.

This module holds what both share: the Faust app, its topics, tables and agents, the feeds
that read the assigned partitions, and rebalances.

Order within a batch, which gives the exactly-once effect (README, "How it works"):
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
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import faust
from faust.tables.manager import TableManager

from pipeline.ports import SnapshotSink
from pipeline.settings import Settings
from streams.aggregate_stage import AggregateStage
from streams.app import build_app
from streams.batch_io import BatchAbandoned, Batches, GuardedSink, app_table
from streams.direct import DirectReader, Record, record_of
from streams.feed import Feed
from streams.ingest_stage import IngestStage, ingest_topics
from streams.metrics import Metrics
from streams.offsets import Offsets
from streams.producer import by_campaign_topic

__all__ = ["Worker"]

log = logging.getLogger(__name__)
# How long stopping waits for a batch under way.
_STOP_WAIT_SECONDS = 60.0
# How long without a batch before watermarks not yet sent since a rebalance are sent.
_BEAT_IDLE_SECONDS = 2.0

Handler = Callable[[Sequence[Record]], Awaitable[None]]
Stage = IngestStage | AggregateStage


class Worker:
    """Owns the Faust app, its topics, tables and agents for one settings object, and the
    stages this process runs (``worker.stage``): ``ingest`` and ``aggregate``, either of
    them ``None`` when another process runs it."""

    def __init__(self, settings: Settings, sink: SnapshotSink, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.sink = GuardedSink(sink, metrics)
        self.partitions = settings.kafka.partitions
        self.last_delivered_at = time.monotonic()  # a batch reached a stage
        self.batch_since: float | None = None  # when the batch under way began (liveness)
        self.direct = DirectReader(
            settings.kafka, settings.worker.batch_max_events, settings.worker.group_id
        )
        stage = settings.worker.stage
        kinds = tuple(ingest_topics(settings))
        # what the agents consume (not the tables' changelogs)
        self.consumed_topics = (kinds if stage in ("all", "ingest") else ()) + (
            (by_campaign_topic(settings),) if stage in ("all", "aggregate") else ()
        )
        self.app = build_app(settings)
        self.batches = Batches(self.app, self.sink, metrics)
        self.offsets = Offsets(
            self.app, self.direct, metrics, self._positions, self.consumed_topics, self.partitions
        )
        self.ingest: IngestStage | None = None
        self.aggregate: AggregateStage | None = None
        # each table's consumed topics (what ``Batches.keep_only`` keeps unwritten changes of)
        self._table_topics: dict[str, set[str]] = {}
        self._define(self.app)
        # mode types a handler as (sender, *args, signal=, **kwargs); Faust passes the
        # partitions as the one positional argument after the sender, as these take them.
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        self.app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]

    def _define(self, app: faust.App) -> None:
        """The topics, and the tables, stages and agents of the stages this process runs
        (``worker.stage``): a stage's table exists only in the process running it."""
        s = self.settings
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        kinds = tuple(ingest_topics(s))
        by_campaign = app.topic(
            by_campaign_topic(s), partitions=self.partitions, internal=True, **raw
        )
        app.topic(s.topics.late, **raw)
        if s.worker.stage in ("all", "ingest"):
            state = app_table(app, s.worker.app_id, "ingest-state", partitions=self.partitions)
            self._table_topics[state.name] = set(kinds)
            self.ingest = IngestStage(s, state, self.batches, self.offsets, self.direct)
            self._agent(app, app.topic(*kinds, **raw), "ingest", self.ingest)
        if s.worker.stage in ("all", "aggregate"):
            # Values are panes in their binary form (``PaneState.encode``): raw bytes.
            windows = app_table(
                app, s.worker.app_id, "kpi-windows", partitions=self.partitions, value_type=bytes
            )
            self._table_topics[windows.name] = {by_campaign.get_topic_name()}
            self.aggregate = AggregateStage(s, windows, self.batches, self.offsets)
            self._agent(app, by_campaign, "aggregate", self.aggregate)

    def _timed(self, handle: Handler) -> Handler:
        """A stage's batch handler, whichever path delivers the batch (a feed, or an agent
        taking what Faust fetched before the feed paused it), noting when the batch under
        way began (``batch_since``)."""

        async def timed(records: Sequence[Record]) -> None:
            self.batch_since = time.monotonic()
            try:
                await handle(records)
            finally:
                self.batch_since = None

        return timed

    def _agent(self, app: faust.App, topic: Any, name: str, stage: Stage) -> None:
        """The stage's Faust agent: it hands on what Faust fetched before the feed paused it."""
        s = self.settings.worker
        handle, lock = self._timed(stage.handle), stage.lock

        async def agent(stream: faust.StreamT[bytes]) -> None:
            # take_events is on Faust's Stream, the class it passes, not on StreamT
            batches = cast("faust.Stream[bytes]", stream).take_events(
                s.batch_max_events, within=s.batch_within_seconds
            )
            async for events in batches:
                self._delivered()
                async with lock:
                    with contextlib.suppress(BatchAbandoned):
                        await handle([record_of(e.message) for e in events])

        app.agent(topic, name=name)(agent)

    # -- reading the assigned partitions (``streams.feed``, ``streams.offsets``) -----------
    def start_feeds(self) -> list[asyncio.Task[None]]:
        """One task per stage this process runs, reading its assigned partitions; stop them
        by cancelling."""
        Positioned = Callable[[list[tuple[str, int]]], Awaitable[None]] | None
        stages: list[tuple[str, set[str], Stage, Positioned]] = []
        if self.ingest:
            ingest = self.ingest
            stages.append(("ingest", set(ingest.kinds), ingest, ingest.costs_positioned))
        if self.aggregate:
            stages.append(("aggregate", {self.aggregate.topic}, self.aggregate, None))
        feeds = [
            Feed(
                name,
                topics,
                self._timed(stage.handle),
                stage.lock,
                app=self.app,
                kafka=self.settings.kafka,
                batch_max_events=self.settings.worker.batch_max_events,
                offsets=self.offsets,
                settled=self.settled,
                delivered=self._delivered,
                positioned=positioned,
            )
            for name, topics, stage, positioned in stages
        ]
        return [asyncio.create_task(feed.run()) for feed in feeds]

    def _locks(self) -> list[asyncio.Lock]:
        return [stage.lock for stage in (self.ingest, self.aggregate) if stage is not None]

    async def stop_feeds(self, feeds: list[asyncio.Task[None]]) -> None:
        """Stop the feeds between batches (a batch under way may take up to a minute to
        finish, then it is cut off: the next owner processes it again)."""
        async with contextlib.AsyncExitStack() as held:
            for lock in self._locks():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lock.acquire(), timeout=_STOP_WAIT_SECONDS)
                    held.callback(lock.release)
            for feed in feeds:
                feed.cancel()
            await asyncio.gather(*feeds, return_exceptions=True)

    def _delivered(self) -> None:
        self.last_delivered_at = time.monotonic()

    def _positions(self, topic: str, partition: int) -> tuple[int | None, int | None]:
        """(where a replay starts, first offset the state has not seen) for a consumed
        partition, from its stage's state; ``None`` for the start of the partition."""
        if self.ingest and topic in self.ingest.kinds:
            return self.ingest.positions(topic, partition)
        if self.aggregate and topic == self.aggregate.topic:
            return self.aggregate.positions(partition)
        return None, None

    def next_unseen(self, topic: str, partition: int) -> int | None:
        """The first offset of a consumed partition its state has not seen."""
        return self.offsets.next_unseen(topic, partition)

    @property
    def last_progress_at(self) -> float:
        """When a batch last reached offsets the state had not seen (monotonic)."""
        return self.offsets.last_progress_at

    @property
    def batches_done(self) -> int:
        return self.batches.done_count

    async def drained(self) -> bool:
        """Settled, and the whole group is done (``Offsets.drained``)."""
        return self.settled() and await self.offsets.drained()

    async def beat(self) -> None:
        """Stage one's heartbeats after a quiet spell (``IngestStage.beat``)."""
        if not self.ingest:
            return
        if time.monotonic() - self.last_delivered_at < _BEAT_IDLE_SECONDS or not self.settled():
            return
        await self.ingest.beat()

    # -- rebalances -------------------------------------------------------------------------
    async def _on_assigned(self, sender: Any, assigned: Any, **kwargs: Any) -> None:
        """Changes an abandoned batch left unwritten stay only with partitions that came back
        to this worker (Faust revokes every partition at each rebalance, then assigns)."""
        ours = {(tp.topic, tp.partition) for tp in assigned}
        self.batches.keep_only(ours, self._table_topics)

    async def _on_revoked(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        """A rebalance takes partitions away: it waits for the batch each stage is in the
        middle of, so a partition's next owner never recovers state that this worker is
        still writing (Faust waits by itself only for the messages it delivered). A batch
        waiting for ClickHouse to come back is abandoned instead of waited for: it has
        written nothing to Kafka's changelog or offsets yet, and the next owner replays it."""
        async with self.sink.abandoning():
            for lock in self._locks():
                async with lock:
                    pass

    def settled(self) -> bool:
        app = self.app
        return not (
            app.rebalancing
            or app.in_recovery
            or not cast(TableManager, app.tables).recovery.completed.is_set()
            or self.sink.outage
        )
