"""The board report's data: one JSON-ready document read from the ClickHouse reader views.

:func:`build_report` is the only place the report's numbers are gathered; the HTML page
(``streams.present.html_report``) and ``socialroi report --format report-json`` both render this
document, so they cannot disagree. The per-campaign rows are exactly what
:func:`sinks.views.campaign_report` returns (the same function behind ``--format json|csv``).

Data quality needs no live worker: dead letters come from ``dead_letters`` (everything
stored), late and duplicate events from ``skipped_daily`` (migration 0014), for the days of
the period by event time, every campaign.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from pipeline.settings import DAILY_PERIOD_SECONDS, Settings
from sinks.backends import Backend
from sinks.reader import dead_letter_counts, dead_letters_by_topic, skipped_daily
from sinks.views import (
    DECLARED_COLUMNS,
    DECLARED_WINDOWS,
    REPORT_COLUMNS,
    SUMMED,
    WITHIN_CAMPAIGN,
    campaign_report,
    derived_columns,
    follower_growth,
    period_conditions,
    query_rows,
    social_traffic_share,
    spend_vs_return,
    where_clause,
)

__all__ = [
    "CAMPAIGN_AUDIENCE_COLUMNS",
    "DAILY_TREND_COLUMNS",
    "REPORT_TOTAL_COLUMNS",
    "SCHEMA",
    "build_report",
    "campaign_audience",
    "daily_trends",
    "report_totals",
]

# /2: late and duplicate counts come from the store (``data_quality.skipped_by_day``), and
# ``data_quality.stream_counters`` is gone.
SCHEMA: Final = "socialroi.report/2"

# Which KPI each source topic feeds (for the per-KPI data-quality table).
_KPI_SOURCES: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("Spend (media, effort, tools)", ("costs",)),
    ("Attributed revenue, ROI, ROAS, CPA", ("web", "social", "costs")),
    ("Social share of site traffic", ("web",)),
    ("Followers and value per follower", ("social", "web")),
    ("Engagement rate and net sentiment", ("social",)),
    ("Video views, view-through rate and watch time", ("social",)),
    ("Customer service on social", ("social",)),
)


# -- the period queries only the board report makes (per campaign: sinks.views) ---------


REPORT_TOTAL_COLUMNS: Final[tuple[str, ...]] = (
    *(name for name in REPORT_COLUMNS if name not in ("campaign_id", "windows", *DECLARED_COLUMNS)),
    "campaigns",
    "windows",
    "service_contacts",
    "mentions_positive",
    "mentions_negative",
    "net_sentiment",
    "value_per_follower",
)
"""Columns of :func:`report_totals`: the report's figures over all chosen campaigns."""


# Direct traffic (campaign '') is no campaign: not counted, as spend_vs_return leaves it
# out of the spend levels (migration 0013); its figures still count in the sums.
_CAMPAIGN_COUNT: Final = "uniqExactIf(campaign_id, campaign_id != '') AS campaigns"


def _report_sums_sql(conditions: Sequence[str], group: str) -> str:
    keys = f"{group}, " if group else ""
    by = f"GROUP BY {group}" if group else ""
    return (
        f"SELECT {keys}{_CAMPAIGN_COUNT}, uniqExact(window_start) AS windows, "
        f"{SUMMED} FROM {DECLARED_WINDOWS.format(where=where_clause(conditions))} "
        f"WHERE {WITHIN_CAMPAIGN} {by}"
    )


def report_totals(
    backend: Backend,
    start: date | None = None,
    end: date | None = None,
    window_seconds: int = DAILY_PERIOD_SECONDS,
    campaigns: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The figures of :func:`campaign_report` summed over every chosen campaign: one row,
    columns :data:`REPORT_TOTAL_COLUMNS`; ratios from the period's sums (not averages of
    the campaigns' ratios), NULL when a denominator is 0. ``windows`` counts distinct window
    starts. With no matching window the counts are 0 and the ratios NULL."""
    conditions = period_conditions(window_seconds, campaigns, start, end)
    outer = derived_columns(REPORT_TOTAL_COLUMNS)
    sql = f"SELECT {', '.join(outer)} FROM ({_report_sums_sql(conditions, '')})"
    rows = query_rows(backend, sql)
    return rows[0]


DAILY_TREND_COLUMNS: Final[tuple[str, ...]] = (
    "day",
    "window_start_ms",
    "is_final",
    "campaigns",
    "impressions",
    "engagements",
    "clicks",
    "visits",
    "follows",
    "unfollows",
    "mentions_positive",
    "mentions_negative",
    "service_resolved",
    "spend",
    "revenue",
    "service_savings",
    "engagement_rate",
    "ctr",
    "net_sentiment",
    "roi",
    "roas",
)
"""Columns of :func:`daily_trends`."""


def daily_trends(
    backend: Backend,
    start: date | None = None,
    end: date | None = None,
    campaigns: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Per UTC day (one-day tumbling windows starting in ``[start, end)``), the chosen
    campaigns summed: counts, money, and engagement rate, CTR, net sentiment, ROI and ROAS
    from the day's sums (NULL when a denominator is 0); columns :data:`DAILY_TREND_COLUMNS`.
    ``is_final`` is true only when every row summed is final."""
    conditions = period_conditions(DAILY_PERIOD_SECONDS, campaigns, start, end)
    times = {
        "day": "toString(toDate(window_start))",
        "window_start_ms": "toUInt64(toUnixTimestamp(window_start)) * 1000",
    }
    outer = derived_columns(DAILY_TREND_COLUMNS, times)
    sql = (
        f"SELECT {', '.join(outer)} FROM (SELECT window_start, min(is_final) AS is_final, "
        f"{_CAMPAIGN_COUNT}, {SUMMED} FROM kpi_current "
        f"{where_clause(conditions)} GROUP BY window_start) ORDER BY window_start_ms"
    )
    return query_rows(backend, sql)


CAMPAIGN_AUDIENCE_COLUMNS: Final[tuple[str, ...]] = (
    "campaign_id",
    "follows",
    "unfollows",
    "net_follower_growth",
    "follower_revenue",
    "value_per_follower",
    "cost_per_new_follower",
    "video_views",
    "view_through_rate",
    "watch_seconds_per_view",
    "service_contacts",
    "service_resolved",
    "resolution_rate",
    "service_savings",
    "mentions_positive",
    "mentions_negative",
    "net_sentiment",
)
"""Columns of :func:`campaign_audience`."""


def campaign_audience(
    backend: Backend,
    start: date | None = None,
    end: date | None = None,
    window_seconds: int = DAILY_PERIOD_SECONDS,
    campaigns: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Per campaign over the tumbling windows of ``window_seconds`` starting in
    ``[start, end)``: followers and their measured value, customer-service contacts and the
    money they saved, and net sentiment; columns :data:`CAMPAIGN_AUDIENCE_COLUMNS`, ratios
    from the period's sums (NULL when a denominator is 0), ordered by campaign id."""
    conditions = period_conditions(window_seconds, campaigns, start, end)
    outer = derived_columns(CAMPAIGN_AUDIENCE_COLUMNS)
    sql = (
        f"SELECT {', '.join(outer)} FROM ({_report_sums_sql(conditions, 'campaign_id')}) "
        "ORDER BY campaign_id"
    )
    return query_rows(backend, sql)


def build_report(
    backend: Backend,
    settings: Settings,
    start: date | None = None,
    last: date | None = None,
    window_seconds: int = DAILY_PERIOD_SECONDS,
    campaigns: Sequence[str] | None = None,
    sort: str = "campaign_id",
    descending: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The whole report for UTC days ``[start, last]`` (``None``: first/last stored) and
    ``campaigns`` (``None``: all, including ``""``, traffic with no campaign).

    Money is in the base currency; ratios are ``None`` when undefined (no spend, no
    impressions, ...). Daily series (traffic share, trends, followers) always use the
    one-day windows; the per-campaign figures total the tumbling windows of
    ``window_seconds``. ``spend_vs_return`` and the dead letters cover everything stored;
    late and duplicate events, the period's days and every campaign.
    """
    end = last + timedelta(days=1) if last is not None else None
    rows = campaign_report(
        backend,
        start=start,
        end=end,
        window_seconds=window_seconds,
        campaigns=campaigns,
        sort=sort,
        descending=descending,
    )
    totals = report_totals(backend, start, end, window_seconds, campaigns)
    traffic = social_traffic_share(backend, start, end)
    trends = daily_trends(backend, start, end, campaigns)
    followers = follower_growth(backend, start, end, campaigns)
    audience = campaign_audience(backend, start, end, window_seconds, campaigns)
    buckets = spend_vs_return(backend)
    dead_by_topic = dead_letters_by_topic(backend)
    dead_by_reason = dead_letter_counts(backend)
    skipped = skipped_daily(backend, start, end)

    social = sum(day["social_visits"] for day in traffic)
    visits = sum(day["visits"] for day in traffic)
    days = sorted({day["day"] for day in traffic} | {day["day"] for day in trends})
    ranked = [r for r in rows if r["campaign_id"] != "" and r["roi"] is not None]
    ranked.sort(key=lambda r: (-r["roi"], r["campaign_id"]))
    summary = {
        "best_campaign": _pick(ranked[0]) if ranked else None,
        "worst_campaign": _pick(ranked[-1]) if len(ranked) > 1 else None,
        "social_visits": social,
        "visits": visits,
        "social_share": None if visits == 0 else social / visits,
        "social_share_first_day": traffic[0]["social_share"] if traffic else None,
        "social_share_last_day": traffic[-1]["social_share"] if traffic else None,
        "first_day": days[0] if days else None,
        "last_day": days[-1] if days else None,
        "provisional_days": [d["day"] for d in trends if not d["is_final"]],
    }
    previous = _previous_period(
        backend,
        start or (date.fromisoformat(days[0]) if days else None),
        last or (date.fromisoformat(days[-1]) if days else None),
        window_seconds,
        campaigns,
    )
    moment = now or datetime.now(UTC)
    return {
        "schema": SCHEMA,
        "generated_at": moment.astimezone(UTC).isoformat(timespec="seconds"),
        "period": {
            "from": start.isoformat() if start else None,
            "to": last.isoformat() if last else None,
        },
        "window_seconds": window_seconds,
        "campaign_filter": list(campaigns) if campaigns is not None else None,
        "attribution_model": settings.attribution.model.value,
        "attribution_lookback_seconds": settings.attribution.lookback_seconds,
        "currency": settings.costs.base_currency,
        "service_costs": {
            "call_centre_contact": settings.costs.call_centre_contact_cost,
            "social_contact": settings.costs.social_contact_cost,
        },
        "summary": summary,
        "totals": totals,
        "previous_period": previous,
        "campaigns": rows,
        "audience": audience,
        "spend_vs_return": buckets,
        "social_traffic": traffic,
        "daily": trends,
        "followers": followers,
        "data_quality": _quality(settings, dead_by_topic, dead_by_reason, skipped),
    }


def _previous_period(
    backend: Backend,
    first: date | None,
    last: date | None,
    window_seconds: int,
    campaigns: Sequence[str] | None,
) -> dict[str, Any] | None:
    """The totals of the days just before ``[first, last]``, as many of them: what a
    director compares with first. ``None`` when the period is unknown (an empty store);
    ``totals["windows"]`` is 0 when nothing was stored for those days."""
    if first is None or last is None:
        return None
    length = (last - first).days + 1
    begin = first - timedelta(days=length)
    return {
        "from": begin.isoformat(),
        "to": (first - timedelta(days=1)).isoformat(),
        "days": length,
        "totals": report_totals(backend, begin, first, window_seconds, campaigns),
    }


def _pick(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("campaign_id", "spend", "revenue", "roi", "roas")}


def _quality(
    settings: Settings,
    dead_by_topic: list[dict[str, Any]],
    dead_by_reason: dict[str, int],
    skipped: list[dict[str, Any]],
) -> dict[str, Any]:
    topics = {
        "social": settings.topics.social,
        "web": settings.topics.web,
        "costs": settings.topics.costs,
        "campaigns": settings.topics.campaigns,
    }
    dead: dict[str, int] = defaultdict(int)
    for row in dead_by_topic:
        dead[row["topic"]] += row["letters"]
    late: dict[str, int] = defaultdict(int)
    duplicates: dict[str, int] = defaultdict(int)
    by_day: dict[str, dict[str, Any]] = {}
    for row in skipped:
        late[row["topic"]] += row["late"]
        duplicates[row["topic"]] += row["duplicates"]
        day = by_day.setdefault(row["day"], {"day": row["day"], "late": 0, "duplicates": 0})
        day["late"] += row["late"]
        day["duplicates"] += row["duplicates"]
    per_kpi = []
    for kpi, sources in _KPI_SOURCES:
        names = [topics[s] for s in sources]
        per_kpi.append(
            {
                "kpi": kpi,
                "topics": names,
                "rejected": sum(dead.get(t, 0) for t in names),
                "late": sum(late.get(t, 0) for t in names),
                "duplicates": sum(duplicates.get(t, 0) for t in names),
            }
        )
    return {
        "per_kpi": per_kpi,
        "dead_letters_by_reason": dead_by_reason,
        "dead_letters_by_topic": dead_by_topic,
        "skipped_by_day": [by_day[d] for d in sorted(by_day)],
    }
