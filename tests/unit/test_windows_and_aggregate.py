from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.aggregate import Contribution, WindowKey, WindowState, fold, parse_key
from pipeline.windows import WindowSpec, assign, specs_from_settings

MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000


def test_tumbling_window_contains_its_timestamp() -> None:
    spec = WindowSpec("tumbling", MINUTE, MINUTE)
    assert list(spec.starts(125_000)) == [120_000]
    assert list(spec.starts(120_000)) == [120_000]
    assert list(spec.starts(119_999)) == [60_000]


def test_hopping_windows_cover_a_timestamp_size_over_step_times() -> None:
    spec = WindowSpec("hopping", DAY, HOUR)
    starts = list(spec.starts(5 * DAY + 30 * MINUTE))
    assert len(starts) == 24
    assert all(s <= 5 * DAY + 30 * MINUTE < s + DAY for s in starts)
    assert starts[-1] == 5 * DAY


def test_invalid_specs_are_refused() -> None:
    with pytest.raises(ValueError):
        WindowSpec("hopping", DAY, 7 * HOUR)
    with pytest.raises(ValueError):
        WindowSpec("tumbling", 0, 0)


def test_default_specs_assign_three_tumbling_and_thirty_one_hopping_windows() -> None:
    specs = specs_from_settings((60, 3600, 86400), ((86400, 3600), (604800, 86400)))
    assert len(assign(10 * DAY + 1, specs)) == 3 + 24 + 7


def test_key_round_trips_even_with_separator_in_campaign() -> None:
    key = WindowKey("a|b", "facebook", "tumbling", MINUTE, 120_000)
    assert parse_key(key.encode()) == key


def contribution(
    src: str, offset: int, ts: int, campaign: str = "c1", **deltas: int
) -> Contribution:
    return Contribution(src, offset, ts, campaign, "facebook", {"events": 1, **deltas})


SPECS = (WindowSpec("tumbling", MINUTE, MINUTE), WindowSpec("hopping", 3 * MINUTE, MINUTE))


def run(batches: list[list[Contribution]]) -> dict[WindowKey, dict[str, object]]:
    store: dict[WindowKey, dict[str, object]] = {}
    for batch in batches:
        touched = fold(batch, SPECS, lambda k: WindowState.from_state(store.get(k)))
        for key, state in touched.items():
            store[key] = state.to_state()
    return store


def test_replayed_contributions_are_skipped() -> None:
    items = [contribution("t:0", o, o * 1000, likes=1) for o in range(10)]
    once = run([items])
    replayed = run([items[:6], items[3:], items])  # crash after 6, replay from 3, then all
    assert replayed == once
    minute = once[WindowKey("c1", "facebook", "tumbling", MINUTE, 0)]
    assert minute["k"] == {"events": 10, "likes": 10}
    assert minute["o"] == {"t:0": 9}


def test_version_grows_with_events_and_finality() -> None:
    state = WindowState({"events": 3}, {})
    assert state.version == 6
    state.final = True
    assert state.version == 7


events_strategy = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 10 * MINUTE), st.integers(1, 5)),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(events_strategy, st.integers(0, 2**32), st.lists(st.integers(1, 59), max_size=5))
def test_batch_splitting_and_partition_interleaving_never_change_a_result(
    raw: list[tuple[int, int, int]], seed: int, cuts: list[int]
) -> None:
    # offsets ascend per source partition, as Kafka delivers them
    next_offset = [0, 0, 0]
    items = []
    for part, ts, likes in raw:
        items.append(contribution(f"t:{part}", next_offset[part], ts, likes=likes))
        next_offset[part] += 1
    reference = run([items])
    # interleave partitions differently, keeping each partition's order
    rng = random.Random(seed)
    queues = {p: [i for i in items if i.src == f"t:{p}"] for p in range(3)}
    shuffled = []
    while any(queues.values()):
        p = rng.choice([p for p, q in queues.items() if q])
        shuffled.append(queues[p].pop(0))
    bounds = sorted({c % len(shuffled) for c in cuts} | {0, len(shuffled)})
    batches = [shuffled[a:b] for a, b in itertools.pairwise(bounds)]
    assert run(batches) == reference
    total_likes = sum(likes for _, _, likes in raw)
    minute_likes = sum(
        int(v["k"].get("likes", 0))  # type: ignore[union-attr]
        for k, v in reference.items()
        if k.kind == "tumbling"
    )
    assert minute_likes == total_likes
