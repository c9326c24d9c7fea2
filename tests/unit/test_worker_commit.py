"""The worker's offset commit takes turns with Faust's: it waits for a commit of Faust's in
flight (whose offsets, computed earlier, are lower), and Faust's wait for it in turn."""

from __future__ import annotations

import asyncio

from faust.types import TP

from streams.offsets import Offsets


class _Consumer:
    """Faust's one-commit-at-a-time guard (``_commit_fut``), as its ``commit`` uses it."""

    def __init__(self) -> None:
        self._commit_fut: asyncio.Future[None] | None = None
        self._committed_offset: dict[TP, int] = {}
        self.landed: list[tuple[str, dict[TP, int]]] = []

    async def maybe_wait_for_commit_to_finish(self) -> bool:
        if self._commit_fut is not None:
            await self._commit_fut
            return True
        return False

    async def _commit_offsets(self, offsets: dict[TP, int], who: str = "worker") -> None:
        # the broker's answer; Faust's slower, so that without turns it would land last
        await asyncio.sleep(0.05 if who == "faust" else 0.01)
        self.landed.append((who, dict(offsets)))
        self._committed_offset.update(offsets)

    async def faust_commit(self, offsets: dict[TP, int]) -> None:
        """Faust's ``commit``: offsets computed first, then one commit at a time."""
        if await self.maybe_wait_for_commit_to_finish():
            return
        self._commit_fut = asyncio.get_running_loop().create_future()
        try:
            await self._commit_offsets(offsets, "faust")
        finally:
            fut, self._commit_fut = self._commit_fut, None
            fut.set_result(None)


def _worker(consumer: _Consumer, unseen: int) -> Offsets:
    app = type("App", (), {"consumer": consumer})()
    return Offsets(app, None, None, lambda topic, partition: (None, unseen), (), 4)  # type: ignore[arg-type]


def test_a_commit_of_faust_in_flight_lands_before_the_worker_s_never_after() -> None:
    consumer = _Consumer()
    tp = TP("social", 0)

    async def scenario() -> None:
        faust = asyncio.create_task(consumer.faust_commit({tp: 100}))
        await asyncio.sleep(0)  # Faust's commit is in flight
        await _worker(consumer, 500).commit_seen([("social", 0)])
        await faust

    asyncio.run(scenario())
    assert consumer.landed == [("faust", {tp: 100}), ("worker", {tp: 500})]
    assert consumer._commit_fut is None


def test_faust_commits_nothing_while_the_worker_commits() -> None:
    consumer = _Consumer()
    tp = TP("social", 1)

    async def scenario() -> None:
        ours = asyncio.create_task(_worker(consumer, 700).commit_seen([("social", 1)]))
        await asyncio.sleep(0)  # ours holds the guard
        assert consumer._commit_fut is not None
        await consumer.faust_commit({tp: 300})  # waits for ours, then does nothing
        await ours

    asyncio.run(scenario())
    assert consumer.landed == [("worker", {tp: 700})]
    assert consumer._committed_offset[tp] == 700


def test_nothing_new_to_commit_takes_no_turn() -> None:
    consumer = _Consumer()
    consumer._committed_offset[TP("social", 2)] = 40
    asyncio.run(_worker(consumer, 40).commit_seen([("social", 2)]))
    assert consumer.landed == [] and consumer._commit_fut is None
