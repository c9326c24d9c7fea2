"""KPI inputs: the additive counters every KPI ratio is computed from.

Snapshots store counters, never ratios, so readers can sum any set of rows and compute the
ratio of the sums (averaging ratios is wrong). Money is integer micro-units of the base
currency so sums are exact; a conversion's fractional attribution credit is micro-units too.
"""

from __future__ import annotations

from typing import Final

__all__ = ["KPI_COUNTERS", "MICROS"]

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
