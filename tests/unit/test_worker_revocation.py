"""A rebalance does not wait for ClickHouse: a batch stuck retrying a refused write is
abandoned, its rows stay buffered, and its state changes reach the changelog with the
partition's next batch if the partition stays with this worker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from pipeline.ports import KpiSnapshot, SinkUnavailable
from streams.batch_io import BatchAbandoned, Batches, GuardedSink, PartitionStore
from streams.metrics import Metrics


class _DownSink:
    """A store that refuses every write, and keeps what it was given."""

    def __init__(self) -> None:
        self.snapshots: list[KpiSnapshot] = []
        self.flushes = 0

    def add_snapshots(self, rows: Sequence[KpiSnapshot]) -> None:
        self.snapshots += rows

    def add_dead_letters(self, rows: Sequence[Any]) -> None: ...
    def add_credits(self, rows: Sequence[Any]) -> None: ...
    def add_raw_events(self, rows: Sequence[Any]) -> None: ...
    def add_skipped_events(self, rows: Sequence[Any]) -> None: ...
    def add_campaigns(self, rows: Sequence[Any]) -> None: ...
    def add_watermarks(self, rows: Sequence[Any]) -> None: ...

    async def flush(self) -> None:
        self.flushes += 1
        raise SinkUnavailable("down", retry_after=30.0)


SNAPSHOT = KpiSnapshot("c", "x", "tumbling", 60, 0, 60_000, False, 2, {"events": 1})


def test_a_write_waiting_for_clickhouse_gives_up_when_partitions_are_revoked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = _DownSink()
    guarded = GuardedSink(down, Metrics(CollectorRegistry()))  # type: ignore[arg-type]

    async def scenario() -> float:
        batch = asyncio.create_task(guarded.write(snapshots=[SNAPSHOT]))
        await asyncio.sleep(0.05)
        assert guarded.outage and not batch.done()  # waiting 30 s for its retry
        began = asyncio.get_running_loop().time()
        async with guarded.abandoning():
            with pytest.raises(BatchAbandoned):
                await batch
        return asyncio.get_running_loop().time() - began

    with caplog.at_level(logging.WARNING):
        waited = asyncio.run(scenario())
    assert waited < 1.0  # not the 30 s back-off, nor the outage's length
    assert down.snapshots == [SNAPSHOT] and down.flushes == 1  # rows kept, not re-added
    assert not guarded.outage  # the next batch tries the store again


class _Table:
    def __init__(self, name: str) -> None:
        self.name = name
        self.data = type("Store", (), {"data": {}})()


def test_an_abandoned_batch_s_changes_go_out_with_the_partition_s_next_batch() -> None:
    batches = Batches.__new__(Batches)
    batches.unwritten = {}
    windows = _Table("kpi-windows")
    table_topics = {"ingest-state": {"social"}, "kpi-windows": {"by-campaign"}}

    async def abandoned(stores: list[PartitionStore]) -> None:
        async with batches.keeping_unwritten(stores):
            raise BatchAbandoned("revoked")

    first = [batches.store(windows, 1), batches.store(windows, 2)]  # type: ignore[arg-type]
    first[0].put("a", b"1")
    first[1].put("b", b"2")
    with pytest.raises(BatchAbandoned):
        asyncio.run(abandoned(first))
    # partition 1 comes back after the rebalance, partition 2 went to another worker
    batches.keep_only({("by-campaign", 1), ("social", 2)}, table_topics)
    again = batches.store(windows, 1)  # type: ignore[arg-type]
    again.put("c", b"3")
    assert again.unwritten() == {"a": b"1", "c": b"3"}
    assert batches.store(windows, 2).unwritten() == {}  # type: ignore[arg-type]
    assert batches.unwritten == {}
