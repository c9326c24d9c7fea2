"""A deterministic KPI snapshot set for the reader views, and the views' answers computed in
plain Python from it (independently of the SQL in migration 0006).

Shape: five campaigns whose total spend falls in different spend buckets, plus site traffic
with no campaign (campaign '' on 'direct' and on 'facebook'); three UTC days; one-day and
one-hour tumbling windows and one-week rolling windows. Special rows: one window written in
three versions, out of order (only the newest counts), a window with no impressions, clicks,
visits, follows, mentions or conversions (its ratios must be NULL, not inf/nan), a campaign
with no spend at all, and a provisional (not final) last day.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

from pipeline.campaigns import declare_credits, newest_records
from pipeline.kpi import KPI_COUNTERS
from pipeline.ports import CampaignRow, CreditRow, KpiSnapshot, SkippedEventRow
from pipeline.verify import credit_fields

DAY_S = 86400
DAY0 = date(2026, 10, 1)
DAY0_MS = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp()) * 1000
DAYS = 3
SOCIAL = {"facebook", "instagram", "linkedin", "pinterest", "threads", "tiktok", "x", "youtube"}

# campaign -> (channels, daily media spend range in base units)
CAMPAIGNS: dict[str, tuple[tuple[str, ...], tuple[int, int]]] = {
    "spring": (("facebook", "instagram"), (5_000, 10_000)),  # 10k - 100k
    "summer": (("linkedin", "email"), (200, 600)),  # 1k - 10k
    "autumn": (("youtube",), (50, 250)),  # 100 - 1k
    "tiny": (("x",), (5, 20)),  # < 100
    "free": (("tiktok",), (0, 0)),  # no spend
}
SUPERSEDED = ("spring", "facebook", "tumbling", DAY_S, 0)  # (campaign, channel, kind, s, day)
EMPTY = ("tiny", "x", "tumbling", DAY_S, 2)


def _counters(rng: random.Random, campaign: str, spend: tuple[int, int]) -> dict[str, int]:
    if campaign == "":
        visits = rng.randint(50, 400)
        return {"events": visits, "visits": visits}
    m = 1_000_000
    impressions = rng.randint(1_000, 50_000)
    positive, negative = rng.randint(0, 30), rng.randint(0, 30)
    contacts = rng.randint(0, 20)
    resolved = rng.randint(0, contacts)
    follows = rng.randint(1, 60)
    values = {
        "impressions": impressions,
        "reach": rng.randint(impressions // 4, impressions // 2),
        "likes": rng.randint(0, impressions // 10),
        "comments": rng.randint(0, impressions // 50),
        "shares": rng.randint(0, impressions // 80),
        "saves": rng.randint(0, impressions // 100),
        "clicks": rng.randint(1, impressions // 20),
        "follows": follows,
        "unfollows": rng.randint(0, follows + 10),
        "mentions_positive": positive,
        "mentions_neutral": rng.randint(0, 30),
        "mentions_negative": negative,
        "service_contacts": contacts,
        "service_resolved": resolved,
        "service_savings_micros": resolved * 4_250_000,
        "visits": rng.randint(10, 900),
        "conversion_credit_micros": rng.randint(0, 40 * m),
        "revenue_micros": rng.randint(0, 3_000 * m),
        "profit_micros": rng.randint(0, 900 * m),
        "media_spend_micros": rng.randint(spend[0] * m, spend[1] * m),
        "effort_spend_micros": rng.randint(0, 50 * m) if spend[1] else 0,
        "tools_spend_micros": rng.randint(0, 9 * m) if spend[1] else 0,
        "follower_revenue_micros": rng.randint(0, 200 * m),
    }
    values["events"] = sum(v for k, v in values.items() if not k.endswith("_micros"))
    # no random draw: the data set of the other counters stays as it was
    views = values["visits"] // 3
    values |= {"video_views": views, "video_completions": views // 3}
    values["video_watch_ms"] = views * 7_250 + values["likes"]
    return values


def build_snapshots() -> list[KpiSnapshot]:
    """The snapshots in the order they are written (older versions of one window included)."""
    rng = random.Random(20261001)
    out: list[KpiSnapshot] = []
    keys = [("", ("direct", "facebook"), (0, 0))] + [
        (campaign, channels, spend) for campaign, (channels, spend) in CAMPAIGNS.items()
    ]
    for campaign, channels, spend in keys:
        for channel in channels:
            for day in range(DAYS):
                day_ms = DAY0_MS + day * DAY_S * 1000
                for kind, seconds, start_ms in (
                    ("tumbling", DAY_S, day_ms),
                    ("tumbling", 3600, day_ms + 9 * 3_600_000),
                    ("hopping", 7 * DAY_S, day_ms),
                ):
                    counters = _counters(rng, campaign, spend)
                    if kind == "hopping":
                        # Composed from panes by the view, never written; drawn all the
                        # same, so the data set (and the cases below) stay as they were.
                        continue
                    if (campaign, channel, kind, seconds, day) == EMPTY:
                        counters = {
                            "events": 3,
                            "media_spend_micros": 12_500_000,
                            "tools_spend_micros": 500_000,
                        }
                    final = day < DAYS - 1
                    snap = KpiSnapshot(
                        campaign, channel, kind, seconds, start_ms,
                        start_ms + seconds * 1000, final, 4, counters,
                    )  # fmt: skip
                    if (campaign, channel, kind, seconds, day) == SUPERSEDED:
                        older = {k: v * 3 + 7 for k, v in counters.items()}
                        out.append(_with(snap, version=2, final=False, counters=older))
                        out.append(_with(snap, version=9, final=True, counters=counters))
                        out.append(_with(snap, version=3, final=False, counters=older))
                    else:
                        out.append(snap)
    return out


def _with(snap: KpiSnapshot, version: int, final: bool, counters: dict[str, int]) -> KpiSnapshot:
    return KpiSnapshot(
        snap.campaign_id, snap.channel, snap.window_kind, snap.window_seconds,
        snap.window_start_ms, snap.window_end_ms, final, version, counters,
    )  # fmt: skip


def latest(snapshots: Iterable[KpiSnapshot]) -> list[KpiSnapshot]:
    """The newest version of every window (what kpi_current shows)."""
    best: dict[tuple[Any, ...], KpiSnapshot] = {}
    for s in snapshots:
        key = (s.campaign_id, s.channel, s.window_kind, s.window_seconds, s.window_start_ms)
        if key not in best or s.version > best[key].version:
            best[key] = s
    return list(best.values())


REPORTED = (
    "impressions", "engagements", "clicks", "visits", "follows", "unfollows",
    "net_follower_growth", "service_resolved", "conversions", "spend", "revenue", "profit",
    "service_savings", "engagement_rate", "ctr", "conversion_rate", "roi", "roas", "cpa",
    "cpc", "cpm", "cost_per_engagement", "cost_per_new_follower", "video_views",
    "view_through_rate",
)  # fmt: skip


# -- the formulas, written out in Python ---------------------------------------------------


def _ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else numerator / denominator


def _sum(rows: Iterable[KpiSnapshot]) -> dict[str, int]:
    total = dict.fromkeys(KPI_COUNTERS, 0)
    for row in rows:
        for name in KPI_COUNTERS:
            total[name] += row.counters.get(name, 0)
    return total


def _spend(c: dict[str, int]) -> int:
    return c["media_spend_micros"] + c["effort_spend_micros"] + c["tools_spend_micros"]


def _money(c: dict[str, int]) -> dict[str, float]:
    m = 1_000_000
    return {
        "conversions": c["conversion_credit_micros"] / m,
        "revenue": c["revenue_micros"] / m,
        "profit": c["profit_micros"] / m,
        "media_spend": c["media_spend_micros"] / m,
        "effort_spend": c["effort_spend_micros"] / m,
        "tools_spend": c["tools_spend_micros"] / m,
        "spend": _spend(c) / m,
        "service_savings": c["service_savings_micros"] / m,
        "follower_revenue": c["follower_revenue_micros"] / m,
    }


def _roi(c: dict[str, int]) -> dict[str, float | None]:
    spend = _spend(c)
    return {
        "roi": _ratio(c["revenue_micros"] + c["service_savings_micros"] - spend, spend),
        "roi_on_profit": _ratio(c["profit_micros"] + c["service_savings_micros"] - spend, spend),
        "roas": _ratio(c["revenue_micros"], spend),
        "cpa": _ratio(spend, c["conversion_credit_micros"]),
    }


def _kpis(c: dict[str, int]) -> dict[str, Any]:
    engagements = c["likes"] + c["comments"] + c["shares"] + c["saves"]
    spend = _spend(c)
    pos, neg = c["mentions_positive"], c["mentions_negative"]
    counts = {
        name: c[name]
        for name in (
            "events", "impressions", "likes", "comments", "shares", "saves", "clicks",
            "follows", "unfollows", "mentions_positive", "mentions_neutral",
            "mentions_negative", "service_contacts", "service_resolved", "visits",
            "video_views", "video_completions", "video_watch_ms",
        )
    }  # fmt: skip
    return {
        **counts,
        "engagements": engagements,
        "net_follower_growth": c["follows"] - c["unfollows"],
        **_money(c),
        "engagement_rate": _ratio(engagements, c["impressions"]),
        "applause_rate": _ratio(c["likes"], c["impressions"]),
        "conversation_rate": _ratio(c["comments"], c["impressions"]),
        "amplification_rate": _ratio(c["shares"], c["impressions"]),
        "ctr": _ratio(c["clicks"], c["impressions"]),
        "net_sentiment": _ratio(pos - neg, pos + neg),
        **_roi(c),
        "cpc": _ratio(spend, c["clicks"] * 1_000_000),
        "cpm": _ratio(spend, c["impressions"] * 1000),
        "cost_per_engagement": _ratio(spend, engagements * 1_000_000),
        "conversion_rate": _ratio(c["conversion_credit_micros"], c["visits"] * 1_000_000),
        "value_per_follower": _ratio(c["follower_revenue_micros"], c["follows"] * 1_000_000),
        "cost_per_new_follower": _ratio(spend, (c["follows"] - c["unfollows"]) * 1_000_000),
        "view_through_rate": _ratio(c["video_completions"], c["video_views"]),
        "watch_seconds_per_view": _ratio(c["video_watch_ms"], c["video_views"] * 1000),
        "resolution_rate": _ratio(c["service_resolved"], c["service_contacts"]),
    }


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


def _group(rows: Iterable[KpiSnapshot], key: Any) -> dict[Any, list[KpiSnapshot]]:
    groups: dict[Any, list[KpiSnapshot]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return dict(sorted(groups.items()))


def _window(rows: list[KpiSnapshot]) -> dict[str, Any]:
    return {
        "window_start_ms": rows[0].window_start_ms,
        "window_end_ms": rows[0].window_end_ms,
        "is_final": all(r.is_final for r in rows),
    }


def _daily(rows: list[KpiSnapshot]) -> list[KpiSnapshot]:
    return [r for r in rows if r.window_kind == "tumbling" and r.window_seconds == DAY_S]


def expected_campaign_windows(rows: list[KpiSnapshot]) -> list[dict[str, Any]]:
    out = []
    groups = _group(
        rows, lambda r: (r.campaign_id, r.window_kind, r.window_seconds, r.window_start_ms)
    )
    for (campaign, kind, seconds, _), group in groups.items():
        c = _sum(group)
        out.append(
            {
                "campaign_id": campaign,
                "window_kind": kind,
                "window_seconds": seconds,
                **_window(group),
                "channels": len(group),
                "reach_sum": c["reach"],
                **_kpis(c),
            }
        )
    return out


def expected_channel_windows(rows: list[KpiSnapshot]) -> list[dict[str, Any]]:
    out = []
    key = lambda r: (r.campaign_id, r.channel, r.window_kind, r.window_seconds, r.window_start_ms)  # noqa: E731
    for (campaign, channel, kind, seconds, _), group in _group(rows, key).items():
        c = _sum(group)
        out.append(
            {
                "campaign_id": campaign,
                "channel": channel,
                "window_kind": kind,
                "window_seconds": seconds,
                **_window(group),
                "reach": c["reach"],
                **_kpis(c),
            }
        )
    return out


# Campaign records: spring declared twice (the later one counts: its name, budget and
# margin), summer once without a budget; no other campaign has one. Their ids have the
# case the snapshots use, and none of the tags is a key of the snapshots, so the windows'
# figures are the snapshots' own (unmargined revenue is 0 here).
# 2026-10-02T12:00Z: the report counts spring's windows of October 1 and 2 only.
SPRING_ENDS_MS = 1_790_942_400_000
NAMES = {"spring": "Spring sale", "summer": "Summer"}
BUDGETS = {"spring": 3_680_000_000}
CAMPAIGN_RECORDS = (
    CampaignRow(
        "spring", "spring", "Spring (draft)", "", -1, 0.0, "", -1, -1, -1, "m-1", 1_790_000_000_000
    ),
    CampaignRow(
        "spring",
        "spring",
        "Spring sale",
        "spring-2026",
        300_000,
        4_000.0,
        "USD",
        3_680_000_000,
        1_790_812_800_000,
        SPRING_ENDS_MS,
        "m-2",
        1_790_000_060_000,
    ),
    CampaignRow(
        "summer", "summer", "Summer", "", -1, 0.0, "", -1, -1, -1, "m-3", 1_790_000_000_000
    ),
)


def expected_campaigns() -> list[dict[str, Any]]:
    """``campaign_directory`` as :func:`sinks.views.campaigns` reads it."""
    return [
        {
            "campaign_key": "spring",
            "campaign_id": "spring",
            "campaign_name": "Spring sale",
            "utm_campaign": "spring-2026",
            "margin": 0.3,
            "margin_ppm": 300_000,
            "budget": 4_000.0,
            "budget_currency": "USD",
            "budget_base": 3_680.0,
            "budget_micros": 3_680_000_000,
            "starts_at_ms": 1_790_812_800_000,
            "ends_at_ms": SPRING_ENDS_MS,
            "record_time_ms": 1_790_000_060_000,
        },
        {
            "campaign_key": "summer",
            "campaign_id": "summer",
            "campaign_name": "Summer",
            "utm_campaign": "",
            "margin": None,
            "margin_ppm": -1,
            "budget": None,
            "budget_currency": "",
            "budget_base": None,
            "budget_micros": -1,
            "starts_at_ms": None,
            "ends_at_ms": None,
            "record_time_ms": 1_790_000_000_000,
        },
    ]


def expected_roi_by_campaign(rows: list[KpiSnapshot]) -> list[dict[str, Any]]:
    names, budgets = NAMES, BUDGETS
    out = []
    for (campaign, start), group in _group(
        _daily(rows), lambda r: (r.campaign_id, r.window_start_ms)
    ).items():
        c = _sum(group)
        money = _money(c)
        del money["follower_revenue"]
        budget = budgets.get(campaign)
        out.append(
            {
                "campaign_id": campaign,
                "campaign_name": names.get(campaign, campaign),
                "day": _day(start),
                **_window(group),
                **money,
                **_roi(c),
                "budget": budget / 1_000_000 if budget else None,
                "budget_used": _spend(c) / budget if budget else None,
            }
        )
    return out


def spend_bucket(spend_micros: int) -> int:
    if spend_micros == 0:
        return 0
    for bucket, upper in enumerate((100, 1_000, 10_000, 100_000, 1_000_000), start=1):
        if spend_micros < upper * 1_000_000:
            return bucket
    return 6


LABELS = ["no spend", "< 100", "100 - 1k", "1k - 10k", "10k - 100k", "100k - 1M", ">= 1M"]


def expected_spend_vs_return(rows: list[KpiSnapshot]) -> list[dict[str, Any]]:
    per_campaign = {  # direct traffic (campaign '') is no campaign (migration 0013)
        campaign: _sum(group)
        for campaign, group in _group(_daily(rows), lambda r: r.campaign_id).items()
        if campaign != ""
    }
    buckets: dict[int, list[dict[str, int]]] = defaultdict(list)
    for totals in per_campaign.values():
        buckets[spend_bucket(_spend(totals))].append(totals)
    out = []
    for bucket, members in sorted(buckets.items()):
        c = {name: sum(m[name] for m in members) for name in KPI_COUNTERS}
        money = _money(c)
        roi = _roi(c)
        out.append(
            {
                "spend_bucket": bucket,
                "spend_bucket_label": LABELS[bucket],
                "campaigns": len(members),
                "campaigns_with_revenue": sum(1 for m in members if m["revenue_micros"] > 0),
                **{k: money[k] for k in ("spend", "revenue", "profit", "service_savings")},
                "conversions": money["conversions"],
                "revenue_per_campaign": c["revenue_micros"] / (len(members) * 1_000_000),
                "roi": roi["roi"],
                "roas": roi["roas"],
            }
        )
    return out


def expected_social_traffic_share(rows: list[KpiSnapshot]) -> list[dict[str, Any]]:
    out = []
    for start, group in _group(_daily(rows), lambda r: r.window_start_ms).items():
        visits = sum(r.counters.get("visits", 0) for r in group)
        social = sum(r.counters.get("visits", 0) for r in group if r.channel in SOCIAL)
        direct = sum(
            r.counters.get("visits", 0)
            for r in group
            if r.campaign_id == "" and r.channel == "direct"
        )
        out.append(
            {
                "day": _day(start),
                **_window(group),
                "visits": visits,
                "social_visits": social,
                "direct_visits": direct,
                "other_visits": visits - social - direct,
                "social_share": _ratio(social, visits),
            }
        )
    return out


def expected_follower_growth(rows: list[KpiSnapshot]) -> list[dict[str, Any]]:
    out = []
    running: dict[str, int] = defaultdict(int)
    for (campaign, start), group in _group(
        _daily(rows), lambda r: (r.campaign_id, r.window_start_ms)
    ).items():
        c = _sum(group)
        running[campaign] += c["follows"] - c["unfollows"]
        out.append(
            {
                "campaign_id": campaign,
                "day": _day(start),
                **_window(group),
                "follows": c["follows"],
                "unfollows": c["unfollows"],
                "net_follower_growth": c["follows"] - c["unfollows"],
                "cumulative_net_follower_growth": running[campaign],
                "follower_revenue": c["follower_revenue_micros"] / 1_000_000,
                "value_per_follower": _ratio(
                    c["follower_revenue_micros"], c["follows"] * 1_000_000
                ),
            }
        )
    return out


def expected_service_savings(rows: list[KpiSnapshot]) -> list[dict[str, Any]]:
    out = []
    for (campaign, start), group in _group(
        _daily(rows), lambda r: (r.campaign_id, r.window_start_ms)
    ).items():
        c = _sum(group)
        out.append(
            {
                "campaign_id": campaign,
                "day": _day(start),
                **_window(group),
                "service_contacts": c["service_contacts"],
                "service_resolved": c["service_resolved"],
                "resolution_rate": _ratio(c["service_resolved"], c["service_contacts"]),
                "service_savings": c["service_savings_micros"] / 1_000_000,
            }
        )
    return out


def expected_report(
    rows: list[KpiSnapshot], start: date, end: date, seconds: int = DAY_S
) -> list[dict[str, Any]]:
    """``campaign_report`` for windows of ``seconds`` starting in [start, end)."""
    lo = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp()) * 1000
    hi = int(datetime(end.year, end.month, end.day, tzinfo=UTC).timestamp()) * 1000
    chosen = [
        r
        for r in rows
        if r.window_kind == "tumbling"
        and r.window_seconds == seconds
        and lo <= r.window_start_ms < hi
        # spring's record ends on October 2: its later windows are outside its days
        and not (r.campaign_id == "spring" and r.window_start_ms >= DAY0_MS + 2 * DAY_S * 1000)
    ]
    out = []
    for campaign, group in _group(chosen, lambda r: r.campaign_id).items():
        c = _sum(group)
        k = _kpis(c)
        budget = BUDGETS.get(campaign)
        out.append(
            {
                "campaign_id": campaign,
                "campaign_name": NAMES.get(campaign, campaign),
                "windows": len({r.window_start_ms for r in group}),
                **{name: k[name] for name in REPORTED},
                "budget": budget / 1_000_000 if budget else None,
                "budget_used": _spend(c) / budget if budget else None,
            }
        )
    return out


def _credit(key: str, conversion: str, touch: str, revenue: int, profit: int) -> CreditRow:
    return CreditRow(
        conversion, f"o-{conversion}", "u-1", 1_790_900_000_000, "last_touch", key, "facebook",
        touch, "click", 1_790_899_000_000, 1_000_000, revenue, profit,
    )  # fmt: skip


# Credited rows as stage one writes them (campaign keys, -1: no margin of its own): one
# with its own profit, one under spring's tag without a margin (spring's 30% applies,
# 1,000,005 x 0.3 = 300,001.5 rounds half up), summer without a margin of its own or a
# declared one, a key no record declares, an id in capitals from before migration 0010,
# and one credit written twice (a replay).
CREDITS = (
    _credit("spring", "c-1", "t-1", 2_000_000, 500_000),
    _credit("spring-2026", "c-2", "t-2", 1_000_005, -1),
    _credit("summer", "c-3", "t-3", 4_000_000, -1),
    _credit("nobody", "c-4", "t-4", 3_000_000, -1),
    _credit("Spring", "c-5", "t-5", 1_000_000, -1),
    _credit("spring-2026", "c-2", "t-2", 1_000_005, -1),
)


def expected_credits() -> list[dict[str, Any]]:
    """``credited_conversions_current`` as :func:`sinks.reader.credited_rows` reads it."""
    rows = {
        (r.model, r.conversion_event_id, r.touch_event_id): r
        for r in declare_credits(CREDITS[:-1], newest_records(CAMPAIGN_RECORDS))
    }
    return [credit_fields(r) for _, r in sorted(rows.items())]


def _skipped(reason: str, topic: str, offset: int, day: int, campaign: str) -> SkippedEventRow:
    ms = DAY0_MS + day * DAY_S * 1000 + 43_200_000 + offset
    mark = ms + 3_600_000 if reason == "late" else 0
    channel = "direct" if topic == "web.events" and not campaign else "facebook"
    return SkippedEventRow(
        reason, topic, 0, offset, f"e{offset}", "like", ms, campaign, channel, mark
    )


# Late and duplicate events (``skipped_events``): one written twice (a replayed batch, in
# its own insert), one the day after the data set.
SKIPPED = (
    _skipped("late", "social.interactions", 1, 0, "spring"),
    _skipped("late", "social.interactions", 1, 0, "spring"),
    _skipped("late", "social.interactions", 5, 0, "spring"),
    _skipped("duplicate", "social.interactions", 2, 1, "autumn"),
    _skipped("late", "web.events", 3, 2, ""),
    _skipped("duplicate", "web.events", 4, DAYS, "spring"),
)


def expected_skipped_daily() -> list[dict[str, Any]]:
    """``skipped_daily``: each source position once, per day, campaign, channel and topic."""
    once = {(r.topic, r.partition, r.offset): r for r in SKIPPED}
    counts: dict[tuple[str, str, str, str], dict[str, int]] = defaultdict(
        lambda: {"late": 0, "duplicates": 0}
    )
    for r in once.values():
        key = (_day(r.event_ms), r.campaign_id, r.channel, r.topic)
        counts[key]["late" if r.reason == "late" else "duplicates"] += 1
    return [
        {"day": d, "campaign_id": c, "channel": ch, "topic": t, **n}
        for (d, c, ch, t), n in sorted(counts.items())
    ]
