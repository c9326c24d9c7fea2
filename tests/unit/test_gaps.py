"""``missing_ranges``: what a worker must read itself so a partition is processed as
consecutive offsets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.gaps import missing_ranges


def test_nothing_is_missing_from_a_run_that_follows_the_state() -> None:
    assert missing_ranges(10, [10, 11, 12]) == []
    assert missing_ranges(None, [5, 6]) == []


def test_a_jump_past_the_state_and_holes_inside_the_batch_are_missing() -> None:
    assert missing_ranges(10, [15, 16, 19, 20, 25]) == [(10, 15), (17, 19), (21, 25)]


def test_a_replay_below_the_state_is_not_missing_but_its_holes_are() -> None:
    assert missing_ranges(100, [40, 41, 45]) == [(42, 45)]


@given(
    expected=st.none() | st.integers(0, 60),
    offsets=st.sets(st.integers(0, 60), min_size=1),
)
def test_filling_the_ranges_gives_consecutive_offsets_from_where_the_state_stopped(
    expected: int | None, offsets: set[int]
) -> None:
    delivered = sorted(offsets)
    ranges = missing_ranges(expected, delivered)
    filled = sorted(delivered + [o for start, stop in ranges for o in range(start, stop)])
    start = delivered[0] if expected is None else min(expected, delivered[0])
    assert filled == list(range(start, delivered[-1] + 1))
    # nothing delivered is read again, and no range is empty
    assert all(start < stop for start, stop in ranges)
    assert not offsets & {o for a, b in ranges for o in range(a, b)}
