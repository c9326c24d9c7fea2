"""The reader view composes hopping windows from panes exactly as ``pipeline.panes.compose``
does: counters, reach (exact unions and merged HyperLogLog sketches), versions and
finality, on every engine."""

from __future__ import annotations

import asyncio
import random

import pytest
from pydantic import SecretStr

from pipeline.hll import Reach
from pipeline.panes import PaneKey, PaneState, compose, pane_sizes
from pipeline.ports import KpiSnapshot, WatermarkRow
from pipeline.settings import ClickHouseSettings
from pipeline.windows import specs_from_settings
from sinks import ClickHouseSink, kpi_rows

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000
T0 = 1_790_000_000_000 - 1_790_000_000_000 % DAY_MS
SPECS = specs_from_settings((60, 3600, 86400), ((86400, 3600), (604800, 86400)))


def panes(seed: int) -> list[KpiSnapshot]:
    """Panes of every size for two campaigns over a week, some with hundreds or thousands
    of users (past the exact limit: sketches), some with a few, some with none."""
    rng = random.Random(seed)
    out: dict[tuple[object, ...], KpiSnapshot] = {}  # one row per pane
    for size in pane_sizes(SPECS):
        for campaign in ("c1", "c2"):
            for k in range(rng.randint(3, 9)):
                state = PaneState()
                for i in range(len(state.counters)):
                    state.counters[i] = rng.randint(0, 50)
                users = rng.choice([0, 2, 60, 300, 4000])
                if users:
                    state.reach = Reach()
                    for _ in range(users):
                        state.reach.add(rng.getrandbits(64))
                state.final = rng.random() < 0.5
                start = T0 + rng.randint(0, 7) * DAY_MS + k * size.size_ms
                row = state.snapshot(PaneKey(campaign, "x", size.size_ms, start), size)
                out[(campaign, size.size_ms, start)] = row
    return list(out.values())


@pytest.mark.parametrize("complete", [False, True])
def test_kpi_current_is_the_composition_of_the_panes(engine_url: str, complete: bool) -> None:
    rows = panes(7)
    watermark = T0 + 4 * DAY_MS
    marks = [WatermarkRow(0, 2, watermark), WatermarkRow(0, 2, watermark - 5000)]
    if complete:  # until every stage-two partition has a watermark, nothing composed is final
        marks.append(WatermarkRow(1, 2, watermark + 3 * DAY_MS))

    async def scenario() -> list[dict[str, object]]:
        sink = ClickHouseSink(ClickHouseSettings(url=SecretStr(engine_url)))
        await sink.start()
        try:
            sink.add_snapshots(rows)
            sink.add_watermarks(marks)
            await sink.flush()
            return kpi_rows(sink.backend)
        finally:
            await sink.close()

    got = asyncio.run(scenario())
    expected = compose(rows, watermark if complete else 0)
    assert any(k[2] == "hopping" and w.is_final for k, w in expected.items()) == complete
    assert len(got) == len(expected)
    sketched = 0
    for row in got:
        key = (
            row["campaign_id"],
            row["channel"],
            row["window_kind"],
            row["window_seconds"],
            row["window_start_ms"],
        )
        want = expected[key]  # type: ignore[index]
        assert row["is_final"] == want.is_final, key
        assert row["version"] == want.version, key
        for name, value in want.counters.items():
            assert row[name] == value, (key, name)
        sketched += key[2] == "hopping" and int(row["reach"]) > 128  # type: ignore[call-overload]
    assert sketched > 10  # the merged-sketch estimate was compared, not only exact unions
