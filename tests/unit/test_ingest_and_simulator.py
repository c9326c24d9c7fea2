"""The pure core end to end: simulator traffic through stage one and two, in batches and
with replays, equals the simulator's independently computed truth."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from pipeline import ingest as ingest_module
from pipeline.aggregate import Contribution, final_watermark
from pipeline.campaigns import declare, declare_credits, newest_records
from pipeline.contract import Contract
from pipeline.ingest import NO_TIME, PartitionClock, ServiceCosts
from pipeline.kpi import MICROS
from pipeline.money import Rates
from pipeline.panes import PaneState, compose
from pipeline.ports import CampaignRow, KpiSnapshot, SkippedEventRow
from pipeline.settings import AttributionModel, AttributionSettings, WindowSettings
from pipeline.simulator import SimMessage, SimulationConfig, simulate, truth_config
from pipeline.stage_one import WATERMARK_KINDS, Ingestor, Message, clock_key
from pipeline.stage_two import Aggregator
from pipeline.verify import (
    compare_credits,
    compare_dead_letters,
    compare_skipped,
    compare_windows,
    credit_fields,
)

NOW = 1_900_000_000_000
RATES = Rates("EUR", {"USD": Decimal("0.92"), "GBP": Decimal("1.17")})
WINDOWS = WindowSettings(
    tumbling_seconds=(60, 3600), hopping=((7200, 3600),), report_period_seconds=0
)


class DictStore(dict[str, Any]):
    """Stage one's state as the changelog keeps it: values round-trip through JSON, and
    ``writes`` holds the changes since ``mark``."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: dict[str, Any] = {}

    def put(self, key: str, value: Any) -> None:
        self[key] = orjson.loads(orjson.dumps(value))
        self.writes[key] = self[key]

    def delete(self, key: str) -> None:
        self.pop(key, None)
        self.writes[key] = None

    def mark(self) -> dict[str, Any]:
        self.writes = {}
        return dict(orjson.loads(orjson.dumps(self)))

    def tear(self, before: dict[str, Any], seed: int) -> None:
        """A crash while the changes were being written: any subset of them landed."""
        rng = random.Random(seed)
        landed = [(k, v) for k, v in self.writes.items() if rng.random() < 0.5]
        self.clear()
        self.update(before)
        for key, value in landed:
            if value is None:
                self.pop(key, None)
            else:
                self[key] = value


def config(
    model: AttributionModel = AttributionModel.LINEAR, lookback_seconds: int = 3 * 86400
) -> SimulationConfig:
    attribution = AttributionSettings(model=model, lookback_seconds=lookback_seconds)
    return SimulationConfig(
        events=6000,
        seed=11,
        campaigns=3,
        days=2,
        truth=truth_config(4, RATES, WINDOWS, attribution),
    )


def make_ingestor(cfg: SimulationConfig) -> Ingestor:
    t = cfg.truth
    return Ingestor(
        Contract(max_message_bytes=65536, max_future_skew_ms=300_000),
        t.rates,
        ServiceCosts(6 * MICROS, 2 * MICROS),
        t.staff_hourly_rate,
        t.allowed_lateness_ms,
        model=t.model,
        lookback_ms=t.lookback_ms,
        half_life_ms=t.half_life_ms,
    )


def run_core(
    messages: list[SimMessage],
    cfg: SimulationConfig,
    batch: int,
    replay_every: int = 0,
) -> tuple[dict[str, Any], dict[str, int], list[Any]]:
    t = cfg.truth
    ingestor = make_ingestor(cfg)
    stage_one = DictStore()
    panes: dict[str, Any] = {}  # the windows table: live panes, or bytes as recovered
    stored: dict[tuple[Any, ...], KpiSnapshot] = {}  # ReplacingMergeTree: highest version wins
    heard: dict[str, int] = {}
    dead: dict[str, int] = defaultdict(int)
    credits: dict[tuple[str, str, str], Any] = {}
    records: list[CampaignRow] = []
    skipped: dict[tuple[str, int, int], SkippedEventRow] = {}  # by source position
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    traffic = [f"{k}:{p}" for k in WATERMARK_KINDS[:2] for p in range(t.partitions)]
    positioned = []
    for m in messages:
        positioned.append((m, offsets[(m.kind, m.partition)]))
        offsets[(m.kind, m.partition)] += 1

    class PaneStore:
        get, put = panes.get, panes.__setitem__

        @staticmethod
        def delete(key: str) -> None:
            panes.pop(key, None)

    store = PaneStore()
    # one stage-two partition: the composed windows' watermark is its own
    aggregator = Aggregator(t.specs, t.allowed_lateness_ms, traffic, lambda campaign: 0)

    def write(snapshot: KpiSnapshot) -> None:
        key = (snapshot.campaign_id, snapshot.channel, snapshot.window_seconds)
        key += (snapshot.window_start_ms,)
        if key not in stored or stored[key].version <= snapshot.version:
            stored[key] = snapshot

    def process(chunk: list[tuple[SimMessage, int]], count_dead: bool) -> None:
        items: list[Contribution] = []
        by_partition: dict[int, dict[str, list[Message]]] = defaultdict(lambda: defaultdict(list))
        for m, offset in chunk:
            by_partition[m.partition][m.kind].append(Message(offset, m.value))
        for part, by_kind in by_partition.items():
            for kind, slice_ in by_kind.items():
                result = ingestor.run(kind, part, slice_, stage_one, NOW)
                if count_dead:
                    for _, rejection in result.rejected:
                        dead[rejection.reason.value] += 1
                records.extend(result.campaigns)
                skipped.update(((kind, part, r.offset), r) for r in result.skipped(kind, part))
                items += [
                    Contribution(
                        f"{kind}:{part}", o, f.ts_ms, f.campaign_id, f.channel, f.deltas, f.user_id
                    )
                    for o, f in result.forwards
                ]
            release = ingestor.release(part, stage_one)
            items += [
                Contribution(release.src, o, f.ts_ms, f.campaign_id, f.channel, f.deltas)
                for o, f in release.forwards
            ]
            for row in release.rows:
                credits[(row.model, row.conversion_event_id, row.touch_event_id)] = row
            for kind in WATERMARK_KINDS:
                latest = PartitionClock.from_state(stage_one.get(clock_key(f"{kind}:{part}")))
                if latest.latest() != NO_TIME:
                    heard[f"{kind}:{part}"] = latest.latest() - t.allowed_lateness_ms
        # a whole batch as the worker folds it: each changed or final pane written once
        for snapshot in aggregator.batch(items, lambda partition: store, {0: heard})[0]:
            write(snapshot)
        # what the changelog keeps, and a restart recovers
        for key, value in panes.items():
            if isinstance(value, PaneState):
                panes[key] = value.encode()

    for start in range(0, len(positioned), batch):
        chunk = positioned[start : start + batch]
        process(chunk, count_dead=True)
        if replay_every and (start // batch) % replay_every == 1:
            process(chunk, count_dead=False)  # a crash before the commit: replayed
    rows = [
        {
            "campaign_id": s.campaign_id,
            "channel": s.channel,
            "window_kind": s.window_kind,
            "window_seconds": s.window_seconds,
            "window_start_ms": s.window_start_ms,
            "is_final": s.is_final,
            **s.counters,
        }
        for s in declare(
            compose(stored.values(), final_watermark(heard, traffic)), newest_records(records)
        ).values()
    ]
    credit_rows = [
        credit_fields(r) for r in declare_credits(credits.values(), newest_records(records))
    ]
    daily: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for r in skipped.values():
        day = datetime.fromtimestamp(r.event_ms // 1000, UTC).date().isoformat()
        row = daily.setdefault(
            (day, r.campaign_id, r.channel, r.topic),
            {"day": day, "campaign_id": r.campaign_id, "channel": r.channel, "topic": r.topic},
        )
        column = "late" if r.reason == "late" else "duplicates"
        row[column] = row.get(column, 0) + 1
    stored_skipped = [{"late": 0, "duplicates": 0, **r} for r in daily.values()]
    got = {"rows": rows, "credits": credit_rows, "skipped": stored_skipped}
    return got, dict(dead), list(stored)


@pytest.fixture(scope="module")
def simulated() -> tuple[list[SimMessage], dict[str, Any], SimulationConfig]:
    cfg = config()
    messages, truth = simulate(cfg)
    return messages, orjson.loads(orjson.dumps(truth)), cfg


def test_simulation_is_deterministic_for_a_seed() -> None:
    a, ta = simulate(SimulationConfig(events=500, seed=3))
    b, tb = simulate(SimulationConfig(events=500, seed=3))
    c, _ = simulate(SimulationConfig(events=500, seed=4))
    assert a == b and ta == tb
    assert a != c
    assert len(a) == 500


def test_simulation_has_every_kind_of_trouble(simulated: Any) -> None:
    messages, truth, _ = simulated
    assert truth["late"] > 0 and truth["duplicates"] > 0
    assert set(truth["dead_letters"]) == {
        "bad_json",
        "clock_skew",
        "oversize",
        "schema_violation",
        "unknown_currency",
        "unknown_event_type",
    }
    assert {m.kind for m in messages} == {
        "social.interactions",
        "web.events",
        "campaign.costs",
        "campaign.meta",
    }
    assert set(truth["config"]["currencies"]) == {"EUR", "GBP", "USD"}
    counters = truth["counters"]
    totals = {
        name: sum(w[6][i] for w in truth["windows"] if w[3] == 3600)
        for i, name in enumerate(counters)
    }
    for name in counters:
        assert totals[name] > 0, name  # the truth exercises every KPI input
    assert any(w[5] for w in truth["windows"]) and not all(w[5] for w in truth["windows"])
    assert all(truth["credited"][m.value] for m in AttributionModel)


@pytest.mark.parametrize(("batch", "replay_every"), [(1, 0), (97, 0), (500, 3), (10_000, 0)])
def test_core_equals_the_simulator_truth(simulated: Any, batch: int, replay_every: int) -> None:
    messages, truth, cfg = simulated
    got, dead, _ = run_core(messages, cfg, batch, replay_every)
    assert compare_windows(truth, got["rows"]) == []
    assert compare_dead_letters(truth["dead_letters"], dead) == []
    assert compare_credits(truth["credited"], got["credits"]) == []
    assert compare_skipped(truth["skipped"], got["skipped"], {}) == []
    assert sum(r["late"] for r in got["skipped"]) == truth["late"] > 0
    assert sum(r["duplicates"] for r in got["skipped"]) == truth["duplicates"] > 0


def test_a_crash_that_keeps_any_subset_of_the_state_changes_credits_the_same() -> None:
    """The changelog may keep any subset of a batch's state changes, and the committed
    offsets may lag some batches behind; replaying from them never credits a conversion
    differently."""
    # A short lookback, so that touches are pruned soon after conversions are released
    # (pruning waits for the oldest of the checkpoints kept, as shipped).
    assert ingest_module._KEEP_CHECKPOINTS <= 8
    cfg = config(lookback_seconds=4 * 3600)
    cfg = SimulationConfig(events=6000, seed=7, campaigns=3, days=2, truth=cfg.truth)
    messages, _ = simulate(cfg)
    ingestor = make_ingestor(cfg)
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    batches: list[dict[int, dict[str, list[Message]]]] = []
    for start, m in enumerate(messages):
        if start % 150 == 0:
            batches.append(defaultdict(lambda: defaultdict(list)))
        batches[-1][m.partition][m.kind].append(Message(offsets[(m.kind, m.partition)], m.value))
        offsets[(m.kind, m.partition)] += 1

    def run(batch: dict[int, dict[str, list[Message]]], store: DictStore) -> dict[Any, Any]:
        rows = {}
        for part, by_kind in batch.items():
            for kind, slice_ in by_kind.items():
                ingestor.run(kind, part, slice_, store, NOW)
            for row in ingestor.release(part, store).rows:
                rows[(row.model, row.conversion_event_id, row.touch_event_id)] = row
        return rows

    store, credited, tried, pruned = DictStore(), {}, 0, 0
    for i, batch in enumerate(batches):
        before = store.mark()
        rows = run(batch, store)
        credited.update(rows)
        after, writes = dict(store), dict(store.writes)
        if not rows or i < 2:
            continue
        pruned += any(
            k.startswith("user|") and len(v or []) < len(before.get(k) or [])
            for k, v in writes.items()
        )
        for seed in range(16):
            store.writes = writes
            store.tear(before, seed)
            for replayed in batches[i - 2 : i + 1]:  # the commit lagged two batches
                for key, row in run(replayed, store).items():
                    assert credited.get(key) == row, (i, seed)
            tried += 1
        store.clear()
        store.update(after)
    assert tried > 200 and pruned > 10  # the crashes above did hit releases and pruning


def test_verify_notices_an_altered_counter_and_a_wrong_final_flag(simulated: Any) -> None:
    messages, truth, cfg = simulated
    got, _, _ = run_core(messages, cfg, 1000)
    rows = got["rows"]
    rows[0]["likes"] += 1
    rows[1]["is_final"] = not rows[1]["is_final"]
    whats = sorted(d.what for d in compare_windows(truth, rows))
    assert whats == ["is_final", "likes"]
    skipped = got["skipped"]
    late = next(r for r in skipped if r["late"])
    late["late"] -= 1
    skipped.append({**late, "day": "2030-01-01", "late": 0, "duplicates": 1})
    wrong = compare_skipped(truth["skipped"], skipped, {})
    assert [(d.what, d.expected, d.actual) for d in wrong] == [
        ("duplicate", 0, 1),
        ("late", late["late"] + 1, late["late"]),
    ]


@pytest.mark.parametrize("model", list(AttributionModel))
def test_every_attribution_model_is_credited_exactly(model: AttributionModel) -> None:
    cfg = config(model)
    messages, truth = simulate(cfg)
    got, _, _ = run_core(messages, cfg, 300)
    assert compare_windows(orjson.loads(orjson.dumps(truth)), got["rows"]) == []
    credit = truth["counters"].index("conversion_credit_micros")
    total_credit = sum(w[6][credit] for w in truth["windows"] if w[3] == 3600)
    assert total_credit % MICROS == 0  # whole conversions, however they were shared


def test_clock_resumes_from_the_checkpoint_before_a_replayed_batch() -> None:
    clock = PartitionClock()
    clock.checkpoint(9, 1_000)
    clock.checkpoint(19, 5_000)
    clock.checkpoint(29, 4_000_000)
    assert clock.max_before(0) == NO_TIME
    assert clock.max_before(10) == 1_000
    assert clock.max_before(25) == 5_000  # inside a batch: resume from its start
    restored = PartitionClock.from_state(orjson.loads(orjson.dumps(clock.to_state())))
    assert restored.max_before(30) == 4_000_000
    restored.checkpoint(19, 5_000)  # replay of the second batch drops later checkpoints
    assert restored.max_before(30) == 5_000


def test_a_replay_starts_at_the_newest_batch_and_the_state_has_seen_up_to_its_end() -> None:
    clock = PartitionClock()
    assert (clock.replay_from(), clock.next_offset()) == (None, None)
    clock.checkpoint(9, 1_000)
    assert (clock.replay_from(), clock.next_offset()) == (None, 10)  # first batch: from start
    clock.checkpoint(19, 5_000)
    clock.checkpoint(29, 6_000)
    assert (clock.replay_from(), clock.next_offset()) == (20, 30)
    clock.checkpoint(24, 5_500)  # a replay that stopped early rewrites the newer checkpoint
    assert (clock.replay_from(), clock.next_offset()) == (20, 25)
