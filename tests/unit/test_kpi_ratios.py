from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.kpi import KPI_COUNTERS, MICROS, ratios

counters = st.fixed_dictionaries({name: st.integers(0, 10**9) for name in KPI_COUNTERS})


def test_an_empty_window_has_null_ratios_not_errors() -> None:
    assert set(ratios({}).values()) == {None}


def test_catalogue_formulas_on_known_numbers() -> None:
    r = ratios({
        "impressions": 1000, "likes": 30, "comments": 10, "shares": 5, "saves": 5,
        "clicks": 20, "mentions_positive": 6, "mentions_negative": 2, "visits": 10,
        "conversion_credit_micros": 2 * MICROS, "revenue_micros": 300 * MICROS,
        "profit_micros": 90 * MICROS, "service_savings_micros": 20 * MICROS,
        "media_spend_micros": 80 * MICROS, "effort_spend_micros": 15 * MICROS,
        "tools_spend_micros": 5 * MICROS, "follows": 4, "follower_revenue_micros": 40 * MICROS,
        "service_contacts": 5, "service_resolved": 4,
    })
    assert r["engagement_rate"] == 0.05 and r["ctr"] == 0.02 and r["net_sentiment"] == 0.5
    assert r["roi"] == (300 + 20 - 100) / 100 and r["roas"] == 3.0
    assert r["roi_on_profit"] == (90 + 20 - 100) / 100
    assert r["cpa"] == 50.0 and r["cpc"] == 5.0 and r["cpm"] == 100.0
    assert r["cost_per_engagement"] == 2.0 and r["conversion_rate"] == 0.2
    assert r["value_per_follower"] == 10.0 and r["resolution_rate"] == 0.8


@given(st.lists(counters, min_size=1, max_size=6), st.randoms())
def test_ratios_of_sums_do_not_depend_on_how_windows_are_merged(
    windows: list[dict[str, int]], rng
) -> None:  # type: ignore[no-untyped-def]
    def total(parts: list[dict[str, int]]) -> dict[str, int]:
        return {n: sum(p[n] for p in parts) for n in KPI_COUNTERS}

    shuffled = windows[:]
    rng.shuffle(shuffled)
    cut = rng.randrange(len(shuffled) + 1)
    merged = total([total(shuffled[:cut]), total(shuffled[cut:])])
    assert ratios(merged) == ratios(total(windows))
    for value in ratios(merged).values():
        assert value is None or value == value  # never NaN
