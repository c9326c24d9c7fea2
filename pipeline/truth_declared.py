"""The truth's campaign declarations, written out plainly (the rules of migrations 0010 and
0013, not the worker's ``pipeline.campaigns``): which declared campaign each key counts for,
and the windows and credited rows under it.

- each campaign's newest accepted record (greatest ``event_time``, then ``event_id``)
  declares it for its whole history;
- a key that is a campaign's id counts for it, else a key that campaigns declare as
  ``utm_campaign`` counts for the one with the smallest id key;
- rows are reported under the declared id, their counters (reach too) summed over the keys;
  revenue credited from a conversion without a margin takes the credited campaign's
  declared margin, rounded half up per window and key, and in the credited rows per row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from pipeline.kpi import KPI_COUNTERS, MICROS
from pipeline.money import Rates
from pipeline.normalize import campaign_key

__all__ = ["declare_credits", "declare_windows", "directory", "owners"]

_PROFIT: Final = KPI_COUNTERS.index("profit_micros")
_UNMARGINED: Final = KPI_COUNTERS.index("unmargined_revenue_micros")

# (campaign key, channel, kind, size ms, start ms)
WindowKey = tuple[str, str, str, int, int]


def directory(
    records: Mapping[str, list[tuple[tuple[int, str], dict[str, Any]]]], rates: Rates
) -> dict[str, dict[str, Any]]:
    """Per campaign key, its newest accepted record (``records``: key -> ((event time,
    event id), body) of each accepted record) as the views read it (``campaign_directory``):
    declared id, name, utm_campaign key, margin_ppm and budget_micros (-1 when none)."""
    out = {}
    for key, found in records.items():
        body = max(found, key=lambda r: r[0])[1]
        margin, budget = body.get("margin"), body.get("budget")
        currency = body.get("currency") or rates.base
        out[key] = {
            "campaign_id": body["campaign_id"],
            "name": body["name"],
            "utm_campaign": campaign_key(body.get("utm_campaign", "")),
            "margin_ppm": -1 if margin is None else round(margin * MICROS),
            "budget_micros": -1 if budget is None else rates.micros(budget, currency),
        }
    return dict(sorted(out.items()))


def owners(declared: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Key -> the campaign key it counts for: a campaign's own key first, then the
    ``utm_campaign`` tags campaigns declare (the smallest campaign key when several do)."""
    found: dict[str, str] = {}
    for key in sorted(declared, reverse=True):  # the smallest key is written last
        tag = declared[key]["utm_campaign"]
        if tag:
            found[tag] = key
    found.update((key, key) for key in declared)
    return found


def declare_windows(
    windows: Mapping[WindowKey, list[int]],
    declared: Mapping[str, Mapping[str, Any]],
    owned_by: Mapping[str, str],
) -> dict[WindowKey, list[int]]:
    """The windows (counters in :data:`KPI_COUNTERS` order, per campaign key) under their
    declared campaigns: the declared margin applied to each key's unmargined revenue, then
    the keys of one campaign summed. The lists of ``windows`` are reused."""
    merged: dict[WindowKey, list[int]] = {}
    for (campaign, channel, kind, size, start), values in windows.items():
        owner = owned_by.get(campaign, campaign)
        record = declared.get(owner)
        margin = record["margin_ppm"] if record else -1
        if margin > 0:  # the declared margin, as the views apply it
            values[_PROFIT] += (values[_UNMARGINED] * margin + MICROS // 2) // MICROS
        key = (record["campaign_id"] if record else owner, channel, kind, size, start)
        into = merged.get(key)
        if into is None:
            merged[key] = values
        else:
            for i, value in enumerate(values):
                into[i] += value
    return merged


def declare_credits(
    rows: Iterable[list[Any]],
    declared: Mapping[str, Mapping[str, Any]],
    owned_by: Mapping[str, str],
) -> list[list[Any]]:
    """Credited rows (conversion, campaign key, channel, touch, share, revenue, profit or -1
    without a margin of its own) as ``credited_conversions_current`` reads them: under the
    declared campaign id, a missing profit from its declared margin (rounded half up per
    row; 0 without one)."""
    out = []
    for event_id, key, channel, touch, share, amount, gain in rows:
        owner = owned_by.get(key, key)
        record = declared.get(owner)
        margin = record["margin_ppm"] if record else -1
        if gain < 0:
            gain = (amount * margin + MICROS // 2) // MICROS if margin > 0 else 0
        campaign = record["campaign_id"] if record else owner
        out.append([event_id, campaign, channel, touch, share, amount, gain])
    return out
