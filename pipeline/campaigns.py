"""Campaign records (``campaign.meta``) applied to the figures: the Python reference of
what the views of migrations 0010 and 0013 compute (``campaign_directory``,
``campaign_keys``, ``kpi_current`` over ``kpi_key_current``, and
``credited_conversions_current``), tested against them.

The rules (also in the README and the campaign.meta schema):

- **Case.** Campaign ids and ``utm_campaign`` tags are compared as keys, trimmed and in
  lower case (:func:`pipeline.normalize.campaign_key`), on every path; a campaign is
  reported under the id its record declares.
- **Time.** A campaign's newest record (greatest ``event_time``, then greatest
  ``event_id``) declares it, for its whole history. The views apply it when they are read,
  so the figures never depend on when a record arrived, and a correction restates them.
- **Tags.** A key that is a campaign's id counts for it; else a key that campaigns declare
  as their ``utm_campaign`` counts for the one with the smallest key; else it is reported
  as it is, a campaign without a record.
- **Margin.** Revenue credited from conversions without a margin of their own
  (``unmargined_revenue_micros``) takes the credited campaign's declared margin, rounded
  half up to the micro-unit per window and key (per row in the credited rows).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from pipeline.kpi import MICROS
from pipeline.ports import CampaignRow, CreditRow, KpiSnapshot

__all__ = ["declare", "declare_credits", "margin_profit", "newest_records", "owners"]

WindowKey = tuple[str, str, str, int, int]


def newest_records(records: Iterable[CampaignRow]) -> dict[str, CampaignRow]:
    """Each campaign key's newest record (``campaign_directory``)."""
    newest: dict[str, CampaignRow] = {}
    for record in records:
        known = newest.get(record.campaign_key)
        if known is None or (record.event_ms, record.event_id) > (known.event_ms, known.event_id):
            newest[record.campaign_key] = record
    return newest


def owners(directory: Mapping[str, CampaignRow]) -> dict[str, str]:
    """Key -> the campaign key it counts for (``campaign_keys``)."""
    found: dict[str, str] = {}
    for key in sorted(directory, reverse=True):  # the smallest key is written last
        tag = directory[key].utm_campaign
        if tag:
            found[tag] = key
    found.update((key, key) for key in directory)
    return found


def declare(
    windows: Mapping[WindowKey, KpiSnapshot], directory: Mapping[str, CampaignRow]
) -> dict[WindowKey, KpiSnapshot]:
    """``windows`` per key (as :func:`pipeline.panes.compose` gives them) per declared
    campaign: counters (reach too) summed over the keys, the declared margin applied to
    each key's unmargined revenue, final only when every key's row is."""
    owner_of = owners(directory)
    out: dict[WindowKey, KpiSnapshot] = {}
    for (key, channel, kind, seconds, start), row in windows.items():
        owner = owner_of.get(key.lower(), key.lower())
        record = directory.get(owner)
        counters = dict(row.counters)
        unmargined = counters.get("unmargined_revenue_micros", 0)
        gain = margin_profit(unmargined, record.margin_ppm if record else -1)
        if gain:
            counters["profit_micros"] = counters.get("profit_micros", 0) + gain
        campaign = record.campaign_id if record else owner
        target = (campaign, channel, kind, seconds, start)
        known = out.get(target)
        if known is None:
            out[target] = dataclasses.replace(row, campaign_id=campaign, counters=counters)
            continue
        summed = dict(known.counters)
        for name, value in counters.items():
            summed[name] = summed.get(name, 0) + value
        out[target] = dataclasses.replace(
            known,
            counters=summed,
            is_final=known.is_final and row.is_final,
            version=known.version + row.version,
            reach_users=(),
            reach_codes=(),
        )
    return out


def margin_profit(unmargined_micros: int, margin_ppm: int) -> int:
    """The profit a declared margin (millionths; -1: none) gives revenue that has no margin
    of its own, rounded half up to the micro-unit; 0 without a positive margin."""
    if margin_ppm <= 0:
        return 0
    return (unmargined_micros * margin_ppm + MICROS // 2) // MICROS


def declare_credits(
    rows: Iterable[CreditRow], directory: Mapping[str, CampaignRow]
) -> list[CreditRow]:
    """Credited rows as ``credited_conversions_current`` shows them: under the declared
    campaign, and a conversion without a margin of its own (``profit_micros`` -1) with the
    profit the declared campaign's margin gives its revenue (0 without one)."""
    owner_of = owners(directory)
    out = []
    for row in rows:
        owner = owner_of.get(row.campaign_id.lower(), row.campaign_id.lower())
        record = directory.get(owner)
        profit = row.profit_micros
        if profit < 0:
            profit = margin_profit(row.revenue_micros, record.margin_ppm if record else -1)
        campaign = record.campaign_id if record else owner
        out.append(dataclasses.replace(row, campaign_id=campaign, profit_micros=profit))
    return out
