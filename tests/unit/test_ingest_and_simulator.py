"""The pure core end to end: simulator traffic through stage one and two equals its truth."""

from __future__ import annotations

from collections import defaultdict

import orjson
import pytest

from pipeline.aggregate import Contribution, WindowKey, WindowState, fold
from pipeline.contract import Contract
from pipeline.ingest import Ingestor, Message, PartitionClock, ServiceCosts
from pipeline.money import Rates
from pipeline.simulator import SimMessage, SimulationConfig, simulate
from pipeline.verify import compare_dead_letters, compare_windows
from pipeline.windows import WindowSpec

NOW = 1_900_000_000_000
MINUTE = WindowSpec("tumbling", 60_000, 60_000)


def ingestor(lateness_ms: int = 600_000) -> Ingestor:
    return Ingestor(
        Contract(max_message_bytes=65536, max_future_skew_ms=300_000),
        Rates("EUR"),
        ServiceCosts(6_000_000, 2_000_000),
        60.0,
        lateness_ms,
    )


def run_core(
    messages: list[SimMessage], batch: int, replay_every: int = 0
) -> tuple[dict[WindowKey, WindowState], dict[str, int], int]:
    """Stage one per partition then stage two, in batches, optionally replaying batches."""
    by_partition: dict[tuple[str, int], list[Message]] = defaultdict(list)
    for m in messages:
        queue = by_partition[(m.kind, m.partition)]
        queue.append(Message(len(queue), m.value))
    stage_one = ingestor()
    clocks: dict[tuple[str, int], PartitionClock] = defaultdict(PartitionClock)
    store: dict[WindowKey, WindowState] = {}
    dead: dict[str, int] = defaultdict(int)
    late = 0
    for (kind, part), queue in sorted(by_partition.items()):
        for round_no, position in enumerate(range(0, len(queue), batch), start=1):
            chunk = queue[position : position + batch]
            replay = bool(replay_every) and round_no % replay_every == 0
            result = stage_one.run(kind, chunk, clocks[(kind, part)], NOW)
            if replay:
                # crash after stage one sent this slice: it is processed again from the
                # checkpoint before it, and must decide exactly the same
                again = stage_one.run(kind, chunk, clocks[(kind, part)], NOW)
                assert again == result
            for _, rejection in result.rejected:
                dead[rejection.reason.value] += 1
            late += len(result.late)
            items = [
                Contribution(f"{kind}:{part}", offset, f.ts_ms, f.campaign_id, f.channel, f.deltas)
                for offset, f, _ in result.forwards
            ]

            def load(key: WindowKey) -> WindowState:
                return WindowState.from_state(store[key].to_state() if key in store else None)

            store.update(fold(items, [MINUTE], load))
            if replay:
                # stage two sees the re-sent contributions: all are skipped
                assert fold(items, [MINUTE], load) == {}
    return store, dict(dead), late


def rows(store: dict[WindowKey, WindowState]) -> list[dict[str, object]]:
    return [
        {
            "campaign_id": k.campaign_id,
            "channel": k.channel,
            "window_start_ms": k.start_ms,
            **s.counters,
        }
        for k, s in store.items()
    ]


@pytest.fixture(scope="module")
def simulated() -> tuple[list[SimMessage], dict[str, object]]:
    messages, truth = simulate(SimulationConfig(events=4000, seed=11, campaigns=3, days=1))
    return messages, orjson.loads(truth.to_json())


def test_simulation_is_deterministic_for_a_seed() -> None:
    a, ta = simulate(SimulationConfig(events=500, seed=3))
    b, tb = simulate(SimulationConfig(events=500, seed=3))
    c, _ = simulate(SimulationConfig(events=500, seed=4))
    assert a == b and ta.to_json() == tb.to_json()
    assert a != c
    assert len(a) == 500


def test_simulation_has_invalid_and_late_events(simulated) -> None:  # type: ignore[no-untyped-def]
    messages, truth = simulated
    assert truth["late"] > 0
    assert sum(truth["dead_letters"].values()) == 40
    kinds = {m.kind for m in messages}
    assert kinds == {"social.interactions", "web.events", "campaign.costs", "campaign.meta"}


@pytest.mark.parametrize("batch", [1, 37, 5000])
def test_core_equals_the_simulator_truth(simulated, batch: int) -> None:  # type: ignore[no-untyped-def]
    messages, truth = simulated
    store, dead, late = run_core(messages, batch)
    assert compare_windows(truth["tumbling_60"], rows(store)) == []
    assert compare_dead_letters(truth["dead_letters"], dead) == []
    assert late == truth["late"]


def test_core_equals_the_truth_with_replayed_batches(simulated) -> None:  # type: ignore[no-untyped-def]
    messages, truth = simulated
    store, _, late = run_core(messages, 50, replay_every=3)
    assert compare_windows(truth["tumbling_60"], rows(store)) == []
    assert late == truth["late"]


def test_verify_notices_an_altered_counter(simulated) -> None:  # type: ignore[no-untyped-def]
    messages, truth = simulated
    store, _, _ = run_core(messages, 500)
    altered = rows(store)
    altered[0]["events"] = int(altered[0]["events"]) + 1  # type: ignore[call-overload]
    diffs = compare_windows(truth["tumbling_60"], altered)
    assert len(diffs) == 1 and diffs[0].what == "events"


def test_clock_resumes_from_the_checkpoint_before_a_replayed_batch() -> None:
    clock = PartitionClock()
    clock.checkpoint(9, 1_000)
    clock.checkpoint(19, 5_000)
    clock.checkpoint(29, 4_000_000)
    assert clock.max_before(0) < -(2**61)
    assert clock.max_before(10) == 1_000
    assert clock.max_before(20) == 5_000
    assert clock.max_before(25) == 5_000  # inside a batch: resume from its start
    restored = PartitionClock.from_state(orjson.loads(orjson.dumps(clock.to_state())))
    assert restored.max_before(30) == 4_000_000
    restored.checkpoint(19, 5_000)  # replay of the second batch drops later checkpoints
    assert restored.max_before(30) == 5_000


def test_late_event_goes_to_late_list_and_keeps_watermark() -> None:
    def social(i: int, minute: int) -> Message:
        return Message(
            i,
            orjson.dumps(
                {
                    "event_id": f"e{i}",
                    "event_type": "like",
                    "channel": "x",
                    "user_id": "u",
                    "campaign_id": "c",
                    "event_time": f"2026-01-01T00:{minute:02d}:00Z",
                }
            ),
        )

    clock = PartitionClock()
    result = ingestor(lateness_ms=5 * 60_000).run(
        "social.interactions",
        [social(0, 30), social(1, 26), social(2, 24), social(3, 31)],
        clock,
        NOW,
    )
    assert [o for o, *_ in result.forwards] == [0, 1, 3]
    assert [o for o, *_ in result.late] == [2]
