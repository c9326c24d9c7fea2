from __future__ import annotations

import itertools
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.aggregate import Contribution
from pipeline.hll import Reach, user_hash
from pipeline.ingest import NO_TIME
from pipeline.panes import (
    FORMAT_LAST_COUNTER,
    PANE_COUNTERS,
    PaneKey,
    PaneSize,
    PaneState,
    compose,
    fold,
    pane_sizes,
)
from pipeline.ports import KpiSnapshot
from pipeline.stage_two import Aggregator
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


def test_default_windows_need_three_pane_sizes() -> None:
    specs = specs_from_settings((60, 3600, 86400), ((86400, 3600), (604800, 86400)))
    assert pane_sizes(specs) == (
        PaneSize(MINUTE, True, ()),
        PaneSize(HOUR, True, (86400,)),
        PaneSize(DAY, True, (604800,)),
    )
    # a step that is not also a tumbling size is a pane no tumbling window reads
    only_hopping = pane_sizes(specs_from_settings((), ((7200, 1800),)))
    assert only_hopping == (PaneSize(1_800_000, False, (7200,)),)
    assert only_hopping[0].kind == "pane"


def test_key_round_trips_even_with_separator_in_campaign() -> None:
    key = PaneKey("a|b", "facebook", MINUTE, 120_000)
    assert PaneKey.parse(key.encode()) == key


def contribution(
    src: str, offset: int, ts: int, campaign: str = "c1", user: str = "", **deltas: int
) -> Contribution:
    return Contribution(src, offset, ts, campaign, "facebook", {"events": 1, **deltas}, user)


SPECS = (WindowSpec("tumbling", MINUTE, MINUTE), WindowSpec("hopping", 3 * MINUTE, MINUTE))
SIZES = pane_sizes(SPECS)


def run(
    batches: list[list[Contribution]], replays: list[int] | None = None
) -> dict[PaneKey, bytes]:
    """Fold batch by batch, the state going through its changelog form in between; each
    batch's count of replays is appended to ``replays``."""
    store: dict[PaneKey, bytes] = {}
    for batch in batches:
        touched, replayed = fold(
            batch, SIZES, lambda k: PaneState.decode(store[k]) if k in store else PaneState()
        )
        for key, state in touched.items():
            store[key] = state.encode()
        if replays is not None:
            replays.append(replayed)
    return store


def test_replayed_contributions_are_skipped_and_counted() -> None:
    items = [contribution("t:0", o, o * 1000, likes=1) for o in range(10)]
    once = run([items])
    replays: list[int] = []
    replayed = run([items[:6], items[3:], items], replays)  # crash after 6, replay from 3
    assert replayed == once
    assert replays == [0, 3, 10]
    minute = PaneState.decode(once[PaneKey("c1", "facebook", MINUTE, 0)])
    snapshot = minute.snapshot(PaneKey("c1", "facebook", MINUTE, 0), SIZES[0])
    assert {k: v for k, v in snapshot.counters.items() if v} == {"events": 10, "likes": 10}
    assert minute.offsets == {"t:0": 9}


def test_an_event_updates_one_pane_per_pane_size() -> None:
    specs = specs_from_settings((60, 3600, 86400), ((86400, 3600), (604800, 86400)))
    touched, _ = fold(
        [contribution("t:0", 0, 10 * DAY + 1)], pane_sizes(specs), lambda k: PaneState()
    )
    assert sorted(k.size_ms for k in touched) == [MINUTE, HOUR, DAY]


@pytest.mark.parametrize("number", sorted(FORMAT_LAST_COUNTER))
def test_a_pane_state_of_an_older_format_decodes_with_the_newer_counters_zero(
    number: int,
) -> None:
    # A changelog written before a counter was added: the counters of its format, then
    # one source offset.
    old = list(range(1, PANE_COUNTERS.index(FORMAT_LAST_COUNTER[number]) + 2))
    name = b"web.events:2"
    data = struct.pack(f"<BBH{len(old)}q", number, 1, 1, *old) + struct.pack("<Hq", len(name), 41)
    state = PaneState.decode(data + name)
    newer = [0] * (len(PANE_COUNTERS) - len(old))
    assert state.counters == [*old, *newer]
    assert (state.offsets, state.final) == ({"web.events:2": 41}, True)
    assert PaneState.decode(state.encode()).counters == [*old, *newer]  # the newest format
    assert state.encode()[0] == max(FORMAT_LAST_COUNTER)


def test_the_newest_pane_format_holds_every_counter_of_the_catalogue() -> None:
    # a counter added to pipeline/kpi.py needs a new format in pipeline/panes.py
    assert FORMAT_LAST_COUNTER[max(FORMAT_LAST_COUNTER)] == PANE_COUNTERS[-1]
    assert list(FORMAT_LAST_COUNTER) == list(range(1, len(FORMAT_LAST_COUNTER) + 1))


def test_version_grows_with_events_and_finality() -> None:
    state = PaneState()
    state.counters[0] = 3  # events
    assert state.version == 6
    state.final = True
    assert state.version == 7


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 400),
    st.booleans(),
    st.dictionaries(st.text(max_size=30), st.integers(0, 2**63 - 1)),
)
def test_a_pane_state_round_trips_through_its_binary_form(
    users: int, final: bool, offsets: dict[str, int]
) -> None:
    state = PaneState(list(range(-5, len(PANE_COUNTERS) - 5)), dict(offsets), final)
    if users:
        state.reach = Reach()
        for user in range(users):  # past 128 users: a sketch
            state.reach.add(user_hash(f"u{user}"))
    back = PaneState.decode(state.encode())
    assert (back.counters, back.offsets, back.final) == (state.counters, offsets, final)
    assert (back.reach and back.reach.count()) == (state.reach and state.reach.count())
    with pytest.raises(ValueError):
        PaneState.decode(b"{" + state.encode()[1:])  # a JSON state of an older version


class _Store(dict[str, object]):
    def put(self, key: str, value: object) -> None:
        self[key] = value

    def delete(self, key: str) -> None:
        self.pop(key, None)


def test_panes_turn_final_once_then_leave_after_the_lateness() -> None:
    store = _Store()
    traffic = ["t:0"]
    stage = Aggregator(SPECS, 30_000, traffic, lambda campaign: 0)
    written, replays = stage.fold(
        [contribution("t:0", o, o * 20_000) for o in range(9)], lambda p: store
    )
    assert replays == 0
    assert {s.window_start_ms for s in written} == {0, MINUTE, 2 * MINUTE}
    assert stage.finalise(0, {}, store) == (NO_TIME, [])  # nothing heard yet
    mark, final = stage.finalise(0, {"t:0": MINUTE}, store)
    assert mark == MINUTE and [(s.window_start_ms, s.is_final) for s in final] == [(0, True)]
    assert stage.finalise(0, {"t:0": MINUTE + 29_999}, store)[1] == []  # final once only
    assert "c1|facebook|60000|0" in store
    stage.finalise(0, {"t:0": MINUTE + 30_000}, store)  # end + lateness: gone
    assert "c1|facebook|60000|0" not in store
    # a restarted worker rebuilds the index from what recovery left (encoded states)
    recovered = _Store({k: v.encode() for k, v in store.items() if isinstance(v, PaneState)})
    again = Aggregator(SPECS, 30_000, traffic, lambda campaign: 0)
    assert again.index(0, recovered) == 2
    _, final = again.finalise(0, {"t:0": 3 * MINUTE}, recovered)
    assert [s.window_start_ms for s in final] == [MINUTE, 2 * MINUTE]


def test_a_batch_writes_a_pane_it_changed_and_made_final_once_as_final() -> None:
    # What fold then finalise would write: the provisional rows of 0-1 min and 1-2 min, then
    # their final rows, which supersede them in the same insert. A batch writes each once.
    items = [contribution("t:0", o, o * 20_000) for o in range(9)]
    apart, whole = _Store(), _Store()
    stage = Aggregator(SPECS, 30_000, ["t:0"], lambda campaign: 0)
    separate, _ = stage.fold(items, lambda p: apart)
    separate += stage.finalise(0, {"t:0": 2 * MINUTE}, apart)[1]
    stage = Aggregator(SPECS, 30_000, ["t:0"], lambda campaign: 0)
    rows, replays, marks = stage.batch(items, lambda p: whole, {0: {"t:0": 2 * MINUTE}})
    assert (replays, marks) == (0, {0: 2 * MINUTE})
    newest: dict[tuple[object, ...], KpiSnapshot] = {}
    for row in separate:  # what ReplacingMergeTree keeps of the fold-then-finalise rows
        key = (row.window_seconds, row.window_start_ms)
        if key not in newest or newest[key].version < row.version:
            newest[key] = row
    assert len(separate) > len(rows) == len(newest)
    assert {(r.window_seconds, r.window_start_ms): r for r in rows} == newest
    minutes = sorted((r.window_start_ms, r.is_final) for r in rows if r.window_seconds == 60)
    assert minutes == [(0, True), (MINUTE, True), (2 * MINUTE, False)]
    assert whole.keys() == apart.keys()


events_strategy = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 10 * MINUTE), st.integers(1, 5), st.integers(0, 9)),
    min_size=1,
    max_size=60,
)


def composed(store: dict[PaneKey, bytes], watermark: int) -> dict[tuple[object, ...], object]:
    size_of = {size.size_ms: size for size in SIZES}
    rows = [PaneState.decode(v).snapshot(k, size_of[k.size_ms]) for k, v in store.items()]
    return {k: (s.counters, s.is_final) for k, s in compose(rows, watermark).items()}


@settings(max_examples=60, deadline=None)
@given(events_strategy, st.integers(0, 2**32), st.lists(st.integers(1, 59), max_size=5))
def test_batch_splitting_and_partition_interleaving_never_change_a_result(
    raw: list[tuple[int, int, int, int]], seed: int, cuts: list[int]
) -> None:
    # offsets ascend per source partition, as Kafka delivers them
    next_offset = [0, 0, 0]
    items = []
    for part, ts, likes, user in raw:
        src = f"social.interactions:{part}"
        items.append(contribution(src, next_offset[part], ts, user=f"u{user}", likes=likes))
        next_offset[part] += 1
    reference = run([items])
    # interleave partitions differently, keeping each partition's order
    rng = random.Random(seed)
    queues = {p: [i for i in items if i.src.endswith(f":{p}")] for p in range(3)}
    shuffled = []
    while any(queues.values()):
        p = rng.choice([p for p, q in queues.items() if q])
        shuffled.append(queues[p].pop(0))
    bounds = sorted({c % len(shuffled) for c in cuts} | {0, len(shuffled)})
    batches = [shuffled[a:b] for a, b in itertools.pairwise(bounds)]
    assert composed(run(batches), 5 * MINUTE) == composed(reference, 5 * MINUTE)
    # every window composed from panes holds exactly the events that fall in it
    windows = compose(
        [PaneState.decode(v).snapshot(k, SIZES[0]) for k, v in reference.items()], 5 * MINUTE
    )
    for (_, _, kind, seconds, start), window in windows.items():
        inside = [r for r in raw if start <= r[1] < start + seconds * 1000]
        assert window.counters["likes"] == sum(r[2] for r in inside), kind
        assert window.counters["reach"] == len({r[3] for r in inside})
        if kind == "hopping":  # a tumbling window's flag is its pane's, set by finalise
            assert window.is_final == (start + seconds * 1000 <= 5 * MINUTE)
    assert sum(w.counters["likes"] for k, w in windows.items() if k[2] == "tumbling") == sum(
        r[2] for r in raw
    )


def test_hopping_reach_merges_sketches_once_a_pane_is_past_the_exact_limit() -> None:
    size = PaneSize(HOUR, True, (2 * 3600,))
    panes = []
    for hour, users in enumerate((range(0, 100), range(50, 3050))):
        state = PaneState()
        state.reach = Reach()
        for user in users:
            state.reach.add(user_hash(f"u{user}"))
        panes.append(state.snapshot(PaneKey("c", "x", HOUR, hour * HOUR), size))
    assert panes[0].reach_users and not panes[1].reach_users  # exact, then a sketch
    windows = compose(panes, NO_TIME)
    union = windows[("c", "x", "hopping", 7200, 0)].counters["reach"]
    assert abs(union - 3050) <= 0.05 * 3050
    assert windows[("c", "x", "hopping", 7200, -HOUR)].counters["reach"] == 100  # exact alone


def test_snapshot_rows_are_kpi_snapshots() -> None:
    state = PaneState()
    snapshot = state.snapshot(PaneKey("c", "x", MINUTE, 0), SIZES[0])
    assert isinstance(snapshot, KpiSnapshot) and snapshot.window_kind == "tumbling"


def test_finalise_never_writes_a_pane_the_store_does_not_hold() -> None:
    # The old scan rebuilt a missing window as an empty state and wrote it as final: an
    # empty row with a version that could hide nothing but still be read. A pane the index
    # knows and the store has lost (expired, or deleted by a replayed batch) is skipped.
    store = _Store()
    stage = Aggregator(SPECS, 0, ["t:0"], lambda campaign: 0)
    stage.fold([contribution("t:0", 0, 1_000), contribution("t:0", 1, MINUTE)], lambda p: store)
    del store["c1|facebook|60000|0"]
    _, final = stage.finalise(0, {"t:0": 2 * MINUTE}, store)
    assert [(s.window_start_ms, s.counters["events"]) for s in final] == [(MINUTE, 1)]
    assert all(s.counters["events"] > 0 for s in final)
