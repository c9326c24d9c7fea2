"""What a worker's batch writes, and where: ClickHouse through a guard that retries until
the rows are taken (or the batch is given up at a rebalance), each table partition's
changes through a store that writes them to the changelog once per key (and to RocksDB once
Kafka acknowledged them), and contributions packed per stage-two partition.

``streams.worker`` decides the order of these writes within a batch (see its docstring);
:class:`Batches` is what both stages' handlers share to make them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, cast

import faust
import orjson
from faust.transport.drivers import aiokafka as aiokafka_driver

from pipeline.panes import PaneState
from pipeline.partitioning import partition_for
from pipeline.ports import (
    CampaignRow,
    CreditRow,
    DeadLetterRow,
    KpiSnapshot,
    RawEventRow,
    SinkUnavailable,
    SkippedEventRow,
    SnapshotSink,
    WatermarkRow,
)
from streams.app import CompactedTable
from streams.metrics import Metrics

__all__ = [
    "PACK_RECORDS",
    "BatchAbandoned",
    "Batches",
    "GuardedSink",
    "Out",
    "Packs",
    "PartitionStore",
    "Sent",
    "app_table",
    "campaign_partition",
    "changelog_value",
    "deliver",
    "table_dict",
]

log = logging.getLogger(__name__)
# A message to send: (topic, key, value, partition or None for the producer's choice).
Out = tuple[str, bytes | None, bytes | None, int | None]
Sent = list[Out]
# Contributions per repartition message: a few hundred bytes each, well under Kafka's 1 MB.
PACK_RECORDS = 500


class BatchAbandoned(Exception):
    """A batch gave up waiting for ClickHouse because its partitions are being taken away:
    nothing of it was acknowledged, committed or written to the changelog, so the
    partitions' next owner processes it again."""


class GuardedSink:
    """Serialises the two agents' writes and retries until the store takes the rows, or
    until :meth:`abandon` (a rebalance) tells a waiting batch to give up."""

    def __init__(self, sink: SnapshotSink, metrics: Metrics) -> None:
        self._sink = sink
        self._metrics = metrics
        self._lock = asyncio.Lock()
        self._abandoning = asyncio.Event()
        self.outage = False

    @contextlib.asynccontextmanager
    async def abandoning(self) -> AsyncIterator[None]:
        """While inside, a batch waiting to retry a refused write raises
        :class:`BatchAbandoned` instead (its rows stay buffered: writing them again later is
        harmless, each row is idempotent). A rebalance must not wait for ClickHouse."""
        self._abandoning.set()
        try:
            yield
        finally:
            self._abandoning.clear()

    async def write(
        self,
        snapshots: Sequence[KpiSnapshot] = (),
        dead_letters: Sequence[DeadLetterRow] = (),
        credits: Sequence[CreditRow] = (),
        raw: Sequence[RawEventRow] = (),
        watermarks: Sequence[WatermarkRow] = (),
        campaigns: Sequence[CampaignRow] = (),
        skipped: Sequence[SkippedEventRow] = (),
    ) -> None:
        if not (snapshots or dead_letters or credits or raw or watermarks or campaigns or skipped):
            return
        async with self._lock:
            self._sink.add_snapshots(snapshots)
            self._sink.add_dead_letters(dead_letters)
            self._sink.add_credits(credits)
            self._sink.add_raw_events(raw)
            self._sink.add_skipped_events(skipped)
            self._sink.add_campaigns(campaigns)
            self._sink.add_watermarks(watermarks)
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
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._abandoning.wait(), exc.retry_after)
                    if self._abandoning.is_set():
                        # The next batch, after the rebalance, tries the store again.
                        self.outage = False
                        raise BatchAbandoned("partitions revoked while ClickHouse is down") from exc
                    continue
                self._metrics.sink_flush_seconds.observe(time.perf_counter() - began)
                if self.outage:
                    log.info("ClickHouse writes resumed")
                self.outage = False
                self._metrics.sink_outage.set(0)
                self._metrics.sink_rows.labels("kpi_panes").inc(len(snapshots))
                self._metrics.sink_rows.labels("dead_letters").inc(len(dead_letters))
                self._metrics.sink_rows.labels("credited_conversions").inc(len(credits))
                self._metrics.sink_rows.labels("raw_events").inc(len(raw))
                self._metrics.sink_rows.labels("skipped_events").inc(len(skipped))
                return


def changelog_value(value: Any) -> bytes | None:
    """A table value as its changelog message: a pane in its binary form, bytes as they
    are (the windows table is ``raw``), anything else as JSON (the ingest table is JSON, as
    Faust's recovery reads it); ``None`` is a tombstone."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, PaneState):
        return value.encode()
    return orjson.dumps(value)


def table_dict(table: CompactedTable, partition: int) -> dict[Any, Any]:
    """The live values of a table's ``partition`` (:meth:`CompactedTable.live`): read and
    changed in place by a batch, written to the changelog by :class:`PartitionStore`. A
    table of another class must have a memory store: its dict, every partition's keys."""
    if isinstance(table, CompactedTable):
        return table.live(partition)
    data = table.data.data
    assert isinstance(data, dict), type(data)
    return data


@functools.lru_cache(maxsize=1 << 16)
def campaign_partition(campaign_id: str, partitions: int) -> int:
    """The stage-two partition of a campaign's windows (Kafka's murmur2 of the id, which is
    Python code: asked once per campaign rather than for every key and contribution)."""
    return partition_for(campaign_id.encode(), partitions)


class PartitionStore:
    """``StateStore`` over one table partition's live values; changes are written to the
    changelog once per key by ``flush``, then to the local store by ``persist`` once Kafka
    acknowledged them (never before: the local store must not hold what the changelog
    does not, see ``streams.app``)."""

    def __init__(
        self, table: CompactedTable, partition: int, unwritten: dict[str, Any] | None = None
    ) -> None:
        self._table = table
        self._data = table_dict(table, partition)
        self.partition = partition
        # ``unwritten``: changes of an abandoned batch, still to reach the changelog
        self._changed: dict[str, Any] = unwritten or {}
        # (key, value) of the changelog messages ``flush`` made, until ``persist``
        self._flushed: list[tuple[bytes, bytes | None]] = []

    def unwritten(self) -> dict[str, Any]:
        """The changes not yet handed to :meth:`flush`."""
        return self._changed

    def get(self, key: str) -> Any | None:
        return self._data.get(key)

    def put(self, key: str, value: Any) -> None:
        self._data[key] = value
        self._changed[key] = value

    def delete(self, key: str) -> None:
        if key in self._data:
            del self._data[key]
        self._changed[key] = None

    @property
    def changelog(self) -> str:
        topic: str = self._table.changelog_topic.get_topic_name()
        return topic

    def flush(self) -> Sent:
        """The changelog messages for the changed keys (keys as JSON, values as
        :func:`changelog_value` makes them)."""
        self._flushed = [
            (orjson.dumps(key), changelog_value(value)) for key, value in self._changed.items()
        ]
        self._changed.clear()
        return [(self.changelog, key, value, self.partition) for key, value in self._flushed]

    def persist(self, last_offsets: dict[tuple[str, int], int]) -> None:
        """Write what ``flush`` made to the local store, once Kafka acknowledged it
        (``last_offsets``: the offset of the last message sent per topic partition)."""
        if self._flushed:
            offset = last_offsets[(self.changelog, self.partition)]
            self._table.persist(self.partition, self._flushed, offset)
            self._flushed = []


def app_table(app: faust.App, prefix: str, name: str, **kwargs: Any) -> CompactedTable:
    """A table of the app (``app.Table`` registers it with Faust's table manager), its
    changelog named ``<prefix>-<name>-changelog``."""
    table = app.Table(name, changelog_prefix=prefix, **kwargs)
    assert isinstance(table, CompactedTable), type(table)
    return table


class Packs:
    """A batch's contributions, packed per stage-two partition into few messages
    (``{"cs": [contribution, ...]}``): one Kafka message per contribution was what bounded
    the worker's throughput."""

    def __init__(self, topic: str, partitions: int) -> None:
        self._topic = topic
        self._partitions = partitions
        self._by_target: dict[int, list[bytes]] = defaultdict(list)

    def add(self, record: dict[str, Any]) -> None:
        # Stage two finds a window's partition from its campaign alone.
        target = campaign_partition(record["c"], self._partitions)
        self._by_target[target].append(orjson.dumps(record))

    def messages(self) -> Sent:
        sent: Sent = []
        for target, records in self._by_target.items():
            for i in range(0, len(records), PACK_RECORDS):
                value = b'{"cs":[' + b",".join(records[i : i + PACK_RECORDS]) + b"]}"
                sent.append((self._topic, None, value, target))
        return sent


async def deliver(app: faust.App, sent: Sent) -> dict[tuple[str, int], int]:
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
    faust_producer = cast(aiokafka_driver.Producer, app.producer)  # the app's transport
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
            batches.append((await producer.send_batch(batch, topic, partition=partition), count))
    await asyncio.gather(*futures, *(future for future, _ in batches))
    last: dict[tuple[str, int], int] = {}
    for future, count in batches:
        meta = future.result()
        end = meta.offset + count - 1
        tp = (meta.topic, meta.partition)
        last[tp] = max(last.get(tp, end), end)
    return last


class Batches:
    """What both stages' batch handlers share: the guarded sink, the changelog writes, the
    changes a batch abandoned while waiting for ClickHouse left unwritten, and the batch
    metrics."""

    def __init__(self, app: faust.App, sink: GuardedSink, metrics: Metrics) -> None:
        self.app = app
        self.sink = sink
        self.metrics = metrics
        self.done_count = 0  # batches finished by either stage
        # Per (table name, partition): changes of an abandoned batch (see ``store``).
        self.unwritten: dict[tuple[str, int], dict[str, Any]] = {}

    def store(self, table: CompactedTable, partition: int) -> PartitionStore:
        """A batch's store for one partition of ``table``, holding the changes an abandoned
        batch of it left unwritten, if the partition is still this worker's."""
        unwritten = self.unwritten.pop((table.name, partition), None)
        return PartitionStore(table, partition, unwritten)

    @contextlib.asynccontextmanager
    async def keeping_unwritten(self, stores: Iterable[PartitionStore]) -> AsyncIterator[None]:
        """A batch abandoned while waiting for ClickHouse (:class:`BatchAbandoned`) has
        changed this worker's tables in memory but not their changelogs, and its rows wait
        in the sink's buffer. If the partition stays here, the feed goes on after that batch,
        so its changes are written with the partition's next batch, after the rows; if the
        partition moves, they are dropped at the next rebalance (:meth:`keep_only`) and the
        next owner replays the batch from what the changelog says."""
        try:
            yield
        except BatchAbandoned:
            for store in stores:
                if store.unwritten():
                    key = (store._table.name, store.partition)
                    self.unwritten[key] = {**self.unwritten.get(key, {}), **store.unwritten()}
            raise

    def keep_only(self, assigned: set[tuple[str, int]], table_topics: dict[str, set[str]]) -> None:
        """Keep unwritten changes only of the table partitions whose consumed partitions
        (``table_topics``: each table's consumed topics) came back to this worker (Faust
        revokes every partition at each rebalance, then assigns)."""
        for name, partition in list(self.unwritten):
            if not any((topic, partition) in assigned for topic in table_topics.get(name, ())):
                del self.unwritten[(name, partition)]

    async def write_changelogs(self, stores: Iterable[PartitionStore]) -> None:
        """Write the stores' changes to their changelogs, then, once Kafka acknowledged
        them, to the local store."""
        stores = list(stores)
        last_offsets = await deliver(self.app, [m for store in stores for m in store.flush()])
        for store in stores:
            store.persist(last_offsets)

    def done(self, stage: str, size: int, began: float) -> None:
        """A batch of ``size`` records of ``stage`` finished (``began``: perf_counter)."""
        self.metrics.batch_size.labels(stage).observe(size)
        self.metrics.batch_seconds.labels(stage).observe(time.perf_counter() - began)
        self.done_count += 1
