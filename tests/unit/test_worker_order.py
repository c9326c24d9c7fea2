"""The worker's guard against messages Faust skipped: only consecutive offsets that follow
on from the state are processed, what follows a gap is left uncommitted, and the consumer
is sent back to the first missing offset."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry

from pipeline.settings import Settings
from streams import worker as worker_module
from streams.metrics import Metrics
from streams.worker import Worker


class FakeConsumer:
    def __init__(self) -> None:
        self.seeks: list[tuple[int, int]] = []

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp.partition, offset))


def events(*offsets: int) -> list[Any]:
    tp = TP("social", 2)
    return [SimpleNamespace(message=SimpleNamespace(offset=o, tp=tp, acked=False)) for o in offsets]


@pytest.fixture
def worker() -> Worker:
    w = Worker(Settings(), sink=SimpleNamespace(), metrics=Metrics(CollectorRegistry()))  # type: ignore[arg-type]
    w.app = SimpleNamespace(consumer=FakeConsumer())  # type: ignore[assignment]
    return w


def run(worker: Worker, batch: list[Any], expected: int | None) -> list[int]:
    kept = asyncio.run(worker._in_order(batch, expected))
    return [e.message.offset for e in kept]


def test_consecutive_offsets_and_replays_pass(worker: Worker) -> None:
    assert run(worker, events(7, 5, 6), None) == [5, 6, 7]
    assert run(worker, events(3, 4, 5, 6), 5) == [3, 4, 5, 6]  # a replay after a crash
    assert worker.app.consumer.seeks == []


def test_a_gap_is_read_again_and_nothing_after_it_is_committed(worker: Worker) -> None:
    batch = events(5, 6, 8, 9)
    assert run(worker, batch, 5) == [5, 6]
    assert [e.message.acked for e in batch] == [False, False, True, True]
    assert worker.app.consumer.seeks == [(2, 7)]
    # The stale messages come first once more: dropped, without asking again at once.
    assert run(worker, events(8, 9), 7) == []
    assert worker.app.consumer.seeks == [(2, 7)]
    # Then the missing one and everything after it, in order.
    assert run(worker, events(7, 8, 9), 7) == [7, 8, 9]


def test_a_batch_wholly_after_the_state_goes_back_to_it(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(worker, events(12, 13), 10) == []
    monkeypatch.setattr(worker_module, "_REWIND_AGAIN_SECONDS", 0.0)
    assert run(worker, events(12, 13), 10) == []  # the seek was lost: ask again
    assert worker.app.consumer.seeks == [(2, 10), (2, 10)]


class IdleConsumer(FakeConsumer):
    def __init__(self, positions: dict[TP, int]) -> None:
        super().__init__()
        self.positions = positions

    def assignment(self) -> set[TP]:
        return set(self.positions)

    async def position(self, tp: TP) -> int:
        return self.positions[tp]


def test_an_idle_partition_fetching_past_the_state_is_sent_back(
    worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    ahead, level, other = TP("social", 1), TP("social", 2), TP("changelog", 0)
    consumer = IdleConsumer({ahead: 40, level: 30, other: 99})
    worker.app = SimpleNamespace(consumer=consumer)  # type: ignore[assignment]
    worker.sink = SimpleNamespace(outage=False)  # type: ignore[assignment]
    seen = {ahead: 25, level: 30, other: None}
    monkeypatch.setattr(worker, "_next_unseen", lambda tp: seen[tp])
    asyncio.run(worker.realign())
    assert consumer.seeks == []  # a batch just ended: fetched messages may be waiting
    worker.last_batch_at -= 60
    worker.busy = 1
    asyncio.run(worker.realign())
    assert consumer.seeks == []  # a batch is being handled
    worker.busy = 0
    asyncio.run(worker.realign())
    assert consumer.seeks == [(1, 25)]
