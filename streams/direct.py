"""Reading ranges of a partition straight from Kafka, beside Faust's consumer.

The worker processes each partition as consecutive offsets. When Faust does not deliver
some of them (it can drop fetched messages around a rebalance and then commit past them,
or stop fetching a partition), the worker reads them here: an assign-only aiokafka consumer,
with no group and no commits, that never moves Faust's positions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.settings import KafkaSettings
from streams.kafka_config import aiokafka_consumer_options, kafka_python_options

__all__ = ["DirectReader", "PartitionFeed", "Record", "record_of"]

log = logging.getLogger(__name__)

# Reading a range that exists gives up after this long without progress.
_STUCK_SECONDS = 60.0


class Record(NamedTuple):
    """One consumed message, whichever consumer read it (a named tuple: one is made per
    message, and a tuple is made in C)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


def record_of(message: Any) -> Record:
    """A ``Record`` of a Faust message (its timestamp is in seconds)."""
    seconds = message.timestamp
    return _record(message)._replace(timestamp_ms=int(seconds * 1000) if seconds else 0)


def _record(message: Any) -> Record:
    """A ``Record`` of an aiokafka message (its timestamp is in ms)."""
    return Record(
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value,
        message.timestamp or 0,
    )


async def _consumer(kafka: KafkaSettings, client_id: str) -> AIOKafkaConsumer:
    """A started assign-only aiokafka consumer that never commits."""
    consumer = AIOKafkaConsumer(**aiokafka_consumer_options(kafka), client_id=client_id)
    await consumer.start()
    return consumer


class DirectReader:
    """Reads offset ranges and partition bounds; started on first use."""

    def __init__(self, kafka: KafkaSettings, max_records: int, group_id: str) -> None:
        self._kafka = kafka
        self._group_id = group_id  # only to read its committed offsets; never joins it
        self._admin: AIOKafkaAdminClient | None = None
        self._max_records = max_records
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            self._consumer = await _consumer(self._kafka, "socialroi-direct-reader")
        return self._consumer

    async def stop(self) -> None:
        if self._admin is not None:
            await self._admin.close()
            self._admin = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def beginning(self, topic: str, partition: int) -> int:
        tp = TopicPartition(topic, partition)
        async with self._lock:
            consumer = await self._started()
            return int((await consumer.beginning_offsets([tp]))[tp])

    async def ends(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        if not tps:
            return {}
        async with self._lock:
            consumer = await self._started()
            found = await consumer.end_offsets([TopicPartition(t, p) for t, p in tps])
        return {(tp.topic, tp.partition): int(end) for tp, end in found.items()}

    async def committed(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
        """The group's committed offset of each partition (``None``: nothing committed)."""
        async with self._lock:
            if self._admin is None:
                admin = AIOKafkaAdminClient(
                    **kafka_python_options(self._kafka), client_id="socialroi-direct-reader"
                )
                await admin.start()
                self._admin = admin
            found = await self._admin.list_consumer_group_offsets(
                self._group_id, partitions=[TopicPartition(t, p) for t, p in tps]
            )
        offsets = {(tp.topic, tp.partition): meta.offset for tp, meta in found.items()}
        return {tp: o if (o := offsets.get(tp, -1)) >= 0 else None for tp in tps}

    async def read(self, topic: str, partition: int, start: int, stop: int) -> list[Record]:
        """Every message with ``start <= offset < stop`` that the partition still holds,
        ascending. Raises ``TimeoutError`` if the range cannot be read."""
        tp = TopicPartition(topic, partition)
        records: list[Record] = []
        async with self._lock:
            consumer = await self._started()
            consumer.assign([tp])
            # Below the log start (retention) the consumer resets to the earliest offset.
            consumer.seek(tp, start)
            progress = time.monotonic()
            while True:
                position = await consumer.position(tp)
                if position >= stop:
                    break
                if time.monotonic() - progress > _STUCK_SECONDS:
                    raise TimeoutError(
                        f"{topic}[{partition}]: could not read offsets {position}..{stop - 1}"
                    )
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=self._max_records)
                for message in batch.get(tp, []):
                    progress = time.monotonic()
                    if message.offset >= stop:
                        break
                    records.append(_record(message))
            consumer.assign([])
        return records


class PartitionFeed:
    """The messages of a set of partitions, read from given offsets onwards: one
    assign-only aiokafka consumer, kept between calls, that fetches ahead in the background
    while the worker processes what it returned. Started on first use."""

    def __init__(self, kafka: KafkaSettings, max_records: int, name: str) -> None:
        self._kafka = kafka
        self._max_records = max_records
        self._name = name
        self._consumer: AIOKafkaConsumer | None = None

    async def assign(self, starts: dict[tuple[str, int], int]) -> None:
        """Read exactly these partitions, each from its offset (messages fetched before
        and not yet returned are dropped)."""
        if self._consumer is None:
            self._consumer = await _consumer(self._kafka, f"socialroi-feed-{self._name}")
        self._consumer.assign([TopicPartition(t, p) for t, p in starts])
        for (topic, partition), offset in starts.items():
            self._consumer.seek(TopicPartition(topic, partition), offset)

    async def fetch(self, timeout_ms: int) -> list[Record]:
        """Up to ``max_records`` messages of the assigned partitions, each partition's in
        offset order; empty after ``timeout_ms`` without any."""
        if self._consumer is None or not self._consumer.assignment():
            await asyncio.sleep(timeout_ms / 1000)
            return []
        found = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=self._max_records)
        return [_record(m) for messages in found.values() for m in messages]

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
