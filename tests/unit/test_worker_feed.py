"""A stage's feed never holds the event loop: while the worker is not settled (a rebalance,
a recovery, ClickHouse refusing writes) it waits for real, so the other stage's retry, the
one that ends a ClickHouse outage, gets to run."""

from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace
from typing import Any

import pytest

import streams.feed as feed_module
from streams.feed import Feed


class _Feed:
    """What ``Feed.run`` uses of a ``PartitionFeed``: positioned once, then nothing new."""

    def __init__(self, *args: Any) -> None:
        self.stopped = False

    async def fetch(self, timeout_ms: int) -> list[Any]:
        await asyncio.sleep(0)
        return []

    async def stop(self) -> None:
        self.stopped = True


class _Spinning(Exception):
    pass


class _Stage:
    """What a ``Feed`` reads of the worker: settled until an outage begins, then not; each
    check while not settled notes how far the rest of the loop has got."""

    def __init__(self) -> None:
        self.crashed: list[BaseException] = []
        self.app = SimpleNamespace(rebalancing_count=1, crash=self._crash)
        self.outage = False
        self.positioned = 0
        self.ticks = 0
        self.seen_while_out: list[int] = []

    async def _crash(self, exc: BaseException) -> None:
        self.crashed.append(exc)

    def settled(self) -> bool:
        if not self.outage:
            return True
        self.seen_while_out.append(self.ticks)
        if len(self.seen_while_out) >= 6:
            raise _Spinning("enough checks made")
        return False


def test_a_positioned_feed_yields_to_the_loop_while_the_worker_is_not_settled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(feed_module, "PartitionFeed", _Feed)
    monkeypatch.setattr(feed_module, "FEED_WAIT_MS", 1)
    stage = _Stage()

    async def position(self: Feed, feed: Any) -> None:
        stage.positioned += 1

    monkeypatch.setattr(Feed, "_position", position)

    async def handle(records: Any) -> None:
        raise AssertionError("nothing was fetched, so nothing is handled")

    async def elsewhere() -> None:
        # Stands for the rest of the worker: the other stage's retry, Faust, the metrics.
        while True:
            stage.ticks += 1
            if stage.positioned and stage.ticks > 3:
                stage.outage = True
            await asyncio.sleep(0)

    async def run() -> None:
        ticker = asyncio.create_task(elsewhere())
        feed = Feed(
            "aggregate",
            {"t"},
            handle,
            asyncio.Lock(),
            app=stage.app,  # type: ignore[arg-type]
            kafka=None,  # type: ignore[arg-type]
            batch_max_events=10,
            offsets=None,  # type: ignore[arg-type]
            settled=stage.settled,
            delivered=lambda: None,
        )
        await asyncio.wait_for(feed.run(), timeout=30)
        ticker.cancel()

    asyncio.run(run())
    assert stage.positioned == 1
    assert [type(exc) for exc in stage.crashed] == [_Spinning]
    # Two checks a round (before and under the stage lock); each round must begin after
    # the rest of the loop has run.
    rounds = stage.seen_while_out[::2]
    assert all(later > earlier for earlier, later in itertools.pairwise(rounds)), rounds
