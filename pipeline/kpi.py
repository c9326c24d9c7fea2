"""KPI inputs: the additive counters every KPI ratio is computed from.

Snapshots store counters, never ratios, so readers can sum any set of rows and compute the
ratio of the sums (averaging ratios is wrong). Money is integer micro-units of the base
currency so sums are exact; a conversion's fractional attribution credit is micro-units too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Final

__all__ = ["KPI_COUNTERS", "MICROS", "KpiValues", "ratios"]

MICROS: Final = 1_000_000

KPI_COUNTERS: Final[tuple[str, ...]] = (
    "events",  # source events folded into this snapshot
    "impressions",
    "reach",  # distinct users seen
    "likes",
    "comments",
    "shares",
    "saves",
    "clicks",
    "follows",
    "unfollows",
    "mentions_positive",
    "mentions_neutral",
    "mentions_negative",
    "service_contacts",
    "service_resolved",
    "service_savings_micros",
    "visits",
    "conversion_credit_micros",
    "revenue_micros",
    "profit_micros",
    "media_spend_micros",
    "effort_spend_micros",
    "tools_spend_micros",
    "follower_revenue_micros",
)


_POSITION: Final = {name: i for i, name in enumerate(KPI_COUNTERS)}


class KpiValues(Mapping[str, int]):
    """Every counter of the catalogue, in its order (``ordered``), read by name like a
    dict: the worker writes a row per pane it touches, and a dict of names per row cost
    more than the row itself. Nothing copies ``ordered``: the list must not change later."""

    __slots__ = ("ordered",)

    def __init__(self, ordered: list[int]) -> None:
        if len(ordered) != len(KPI_COUNTERS):
            raise ValueError(f"{len(ordered)} values for {len(KPI_COUNTERS)} KPI counters")
        self.ordered = ordered

    def __getitem__(self, name: str) -> int:
        return self.ordered[_POSITION[name]]

    def __iter__(self) -> Iterator[str]:
        return iter(KPI_COUNTERS)

    def __len__(self) -> int:
        return len(KPI_COUNTERS)

    def __repr__(self) -> str:
        return f"KpiValues({dict(self)!r})"


def _ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else numerator / denominator


def ratios(c: Mapping[str, int]) -> dict[str, float | None]:
    """Every ratio of the KPI catalogue from summed counters (money in base units).

    Sum the counters of any set of windows first, then call this: a ratio of sums, never
    an average of ratios. A zero denominator gives ``None``, not an error or infinity.
    ROI counts attributed revenue plus service savings against spend (media, effort, tools).
    """
    g = {name: c.get(name, 0) for name in KPI_COUNTERS}
    spend = g["media_spend_micros"] + g["effort_spend_micros"] + g["tools_spend_micros"]
    engagements = g["likes"] + g["comments"] + g["shares"] + g["saves"]
    impressions = g["impressions"]
    return {
        "engagement_rate": _ratio(engagements, impressions),
        "applause_rate": _ratio(g["likes"], impressions),
        "conversation_rate": _ratio(g["comments"], impressions),
        "amplification_rate": _ratio(g["shares"], impressions),
        "ctr": _ratio(g["clicks"], impressions),
        "net_sentiment": _ratio(
            g["mentions_positive"] - g["mentions_negative"],
            g["mentions_positive"] + g["mentions_negative"],
        ),
        "roi": _ratio(g["revenue_micros"] + g["service_savings_micros"] - spend, spend),
        "roi_on_profit": _ratio(g["profit_micros"] + g["service_savings_micros"] - spend, spend),
        "roas": _ratio(g["revenue_micros"], spend),
        "cpa": _ratio(spend, g["conversion_credit_micros"]),
        "cpc": _ratio(spend, g["clicks"] * MICROS),
        "cpm": _ratio(spend, impressions * 1000),
        "cost_per_engagement": _ratio(spend, engagements * MICROS),
        "conversion_rate": _ratio(g["conversion_credit_micros"], g["visits"] * MICROS),
        "value_per_follower": _ratio(g["follower_revenue_micros"], g["follows"] * MICROS),
        "resolution_rate": _ratio(g["service_resolved"], g["service_contacts"]),
    }
