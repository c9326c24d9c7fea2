"""A cost partition with messages that stage one has not read yet holds finality: a cost
read late (after a restart, or behind a backlog of other partitions) must not find its
panes already finished and dropped."""

from __future__ import annotations

from typing import Any

from pipeline.aggregate import final_watermark
from pipeline.ingest import NO_TIME, PartitionClock
from pipeline.stage_one import clock_key
from streams.ingest_stage import source_watermarks

COSTS = "campaign.costs"


class _Store(dict[str, Any]):
    pass


def _marks(waiting: set[int], store: dict[str, Any]) -> dict[str, int | None]:
    return source_watermarks(store.get, 0, 1_000, waiting)


def _clock(*checkpoints: tuple[int, int]) -> list[list[int]]:
    return PartitionClock(list(checkpoints)).to_state()


def test_a_waiting_cost_partition_is_announced_as_not_started_then_released() -> None:
    store = _Store({clock_key("social.interactions:0"): _clock((9, 50_000))})
    traffic = ["social.interactions:0"]
    # nothing read of costs:0 yet, and it has messages: it holds the final watermark
    marks = _marks({0}, store)
    assert marks == {"social.interactions:0": 49_000, f"{COSTS}:0": NO_TIME}
    assert final_watermark({k: v for k, v in marks.items() if v is not None}, traffic) == NO_TIME
    # read, with events: its own watermark from then on
    store[clock_key(f"{COSTS}:0")] = _clock((3, 20_000))
    assert _marks({0}, store)[f"{COSTS}:0"] == 19_000
    # read, but no message had an event time (all dead letters): the hold is released
    store[clock_key(f"{COSTS}:0")] = _clock((3, NO_TIME))
    assert _marks({0}, store)[f"{COSTS}:0"] is None
    # an empty cost partition is not announced at all
    del store[clock_key(f"{COSTS}:0")]
    assert f"{COSTS}:0" not in _marks(set(), store)


def test_a_web_partition_s_watermark_stays_below_a_conversion_it_still_holds() -> None:
    """Conversions are released in offset order, so one both watermarks have passed can
    wait behind an earlier offset: its panes must not be finished before its credit
    comes (it was lost when they were)."""
    web = "web.events:0"
    store = _Store(
        {
            clock_key("social.interactions:0"): _clock((9, 900_000)),
            clock_key(web): _clock((7, 800_000)),
        }
    )
    assert _marks(set(), store)[web] == 799_000
    # two held: 500,000 waits behind the earlier offset at 950,000
    store["conversions|0"] = [
        4,
        [[5, 950_000, "u1", "e1", "o1", 1, -1], [6, 500_000, "u2", "e2", "o2", 1, -1]],
        [],
    ]
    marks = _marks(set(), store)
    assert marks[web] == 499_999
    assert marks["social.interactions:0"] == 899_000  # only the web partition holds
    traffic = ["social.interactions:0", web]
    assert final_watermark({k: v for k, v in marks.items() if v is not None}, traffic) < 500_000
    store["conversions|0"] = [6, [], ["u1", "u2"]]  # released: no hold
    assert _marks(set(), store)[web] == 799_000
