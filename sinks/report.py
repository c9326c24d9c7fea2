"""The board report's data: one JSON-ready document read from the ClickHouse reader views.

:func:`build_report` is the only place the report's numbers are gathered; the HTML page
(``streams.html_report``) and ``socialroi report --format report-json`` both render this
document, so they cannot disagree. The per-campaign rows are exactly what
:func:`sinks.views.campaign_report` returns (the same function behind ``--format json|csv``).

Late and duplicate events are not stored in ClickHouse: they are Prometheus counters of the
worker (``socialroi_late_events_total``, ``socialroi_duplicates_total``). The document carries
them only when the caller passes them (``counters``: late, duplicates and consumed per topic,
which ``streams.report.stream_counters`` reads from a worker's ``/metrics`` or its in-process
registry); otherwise ``data_quality.stream_counters`` is ``null`` and the page says where to
read them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from pipeline.settings import Settings
from sinks.backends import Backend
from sinks.reader import dead_letter_counts
from sinks.views import (
    campaign_audience,
    campaign_report,
    daily_trends,
    dead_letters_by_topic,
    follower_growth,
    report_totals,
    social_traffic_share,
    spend_vs_return,
)

__all__ = ["SCHEMA", "build_report"]

SCHEMA: Final = "socialroi.report/1"

# Which KPI each source topic feeds (for the per-KPI data-quality table).
_KPI_SOURCES: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("Spend (media, effort, tools)", ("costs",)),
    ("Attributed revenue, ROI, ROAS, CPA", ("web", "social", "costs")),
    ("Social share of site traffic", ("web",)),
    ("Followers and value per follower", ("social", "web")),
    ("Engagement rate and net sentiment", ("social",)),
    ("Customer service on social", ("social",)),
)


def build_report(
    backend: Backend,
    settings: Settings,
    start: date | None = None,
    last: date | None = None,
    window_seconds: int = 86400,
    campaigns: Sequence[str] | None = None,
    sort: str = "campaign_id",
    descending: bool = False,
    counters: dict[str, dict[str, int]] | None = None,
    counters_source: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The whole report for UTC days ``[start, last]`` (``None``: first/last stored) and
    ``campaigns`` (``None``: all, including ``""``, traffic with no campaign).

    Money is in the base currency; ratios are ``None`` when undefined (no spend, no
    impressions, ...). Daily series (traffic share, trends, followers) always use the
    one-day windows; the per-campaign figures total the tumbling windows of
    ``window_seconds``. ``spend_vs_return`` and the dead letters cover everything stored.
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
        "data_quality": _quality(
            settings, dead_by_topic, dead_by_reason, counters, counters_source
        ),
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
    counters: dict[str, dict[str, int]] | None,
    counters_source: str | None,
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
    per_kpi = []
    for kpi, sources in _KPI_SOURCES:
        names = [topics[s] for s in sources]
        entry: dict[str, Any] = {
            "kpi": kpi,
            "topics": names,
            "rejected": sum(dead.get(t, 0) for t in names),
            "late": None,
            "duplicates": None,
        }
        if counters is not None:
            entry["late"] = sum(counters["late"].get(t, 0) for t in names)
            entry["duplicates"] = sum(counters["duplicates"].get(t, 0) for t in names)
        per_kpi.append(entry)
    return {
        "per_kpi": per_kpi,
        "dead_letters_by_reason": dead_by_reason,
        "dead_letters_by_topic": dead_by_topic,
        "stream_counters": counters,
        "stream_counters_source": counters_source if counters is not None else None,
    }
