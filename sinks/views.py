"""The reader views (migration 0006) and the functions that read them.

Every KPI ratio is computed from summed counters, never by averaging ratios, and is NULL when
its denominator is 0 (ClickHouse would give ``inf`` or ``nan``; 18.16 and current releases
alike). Each ratio is one division of exact integer sums (money in micro-units), so the server,
chDB and Python all get the same IEEE double. Money columns are base-currency units
(``*_micros / 1e6``, Float64); ratio columns are ``Nullable(Float64)`` on every engine.

The formulas come from the KPI catalogue (:data:`pipeline.kpi.CATALOGUE`), rendered as SQL
here: the migration files carry frozen copies of them (a unit test checks each appears there
verbatim), and :func:`campaign_report` uses them to total a period from ``kpi_current``.

Readers return dicts. Times come back as epoch milliseconds (``window_start_ms``,
``window_end_ms``) and days as ``'YYYY-MM-DD'`` strings (``day``), computed in SQL so they do
not depend on a driver's types; ``is_final`` is a bool.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any, Final

from pipeline.kpi import CATALOGUE, KPI_COUNTERS, RATIOS, SUMS, expand
from pipeline.settings import DAILY_PERIOD_SECONDS
from sinks.backends import Backend, sql_string
from sinks.errors import QueryError
from sinks.reader import credited_rows, skipped_daily

__all__ = [
    "DECLARED_COLUMNS",
    "DECLARED_WINDOWS",
    "MONEY_EXPRESSIONS",
    "RATIO_EXPRESSIONS",
    "REPORT_COLUMNS",
    "SOCIAL_CHANNELS_SQL",
    "SPEND_BUCKETS",
    "SUMMED",
    "VIEW_READERS",
    "WITHIN_CAMPAIGN",
    "campaign_report",
    "campaign_windows",
    "campaigns",
    "channel_windows",
    "derived_columns",
    "follower_growth",
    "period_conditions",
    "query_rows",
    "roi_by_campaign",
    "service_savings",
    "social_traffic_share",
    "spend_vs_return",
    "where_clause",
]

SOCIAL_CHANNELS_SQL: Final[tuple[str, ...]] = (
    "facebook",
    "instagram",
    "linkedin",
    "pinterest",
    "threads",
    "tiktok",
    "x",
    "youtube",
)
"""The social channels as written in ``social_traffic_share`` (a unit test checks they equal
:data:`pipeline.normalize.SOCIAL_CHANNELS`)."""

SPEND_BUCKETS: Final[tuple[tuple[int, str, int | None], ...]] = (
    (0, "no spend", 0),
    (1, "< 100", 100),
    (2, "100 - 1k", 1_000),
    (3, "1k - 10k", 10_000),
    (4, "10k - 100k", 100_000),
    (5, "100k - 1M", 1_000_000),
    (6, ">= 1M", None),
)
"""``spend_vs_return`` buckets: (number, label, exclusive upper bound in base units)."""

_SPEND = expand("spend_micros")


def _ratio(numerator: str, denominator: str) -> str:
    return f"if({denominator} = 0, NULL, {numerator} / {denominator})"


MONEY_EXPRESSIONS: Final[dict[str, str]] = {
    kpi.shown_as: f"{expand(kpi.name)} / 1000000"
    for kpi in CATALOGUE
    if kpi.unit in ("micros", "credit") and not kpi.internal
}
"""Base-currency money (Float64) from summed micro-unit columns (and conversions from
their credit), named as the catalogue shows them."""

RATIO_EXPRESSIONS: Final[dict[str, str]] = {
    kpi.name: _ratio(expand(kpi.formula), expand(kpi.denominator)) for kpi in RATIOS
}
"""Nullable(Float64) ratios from summed inputs (named as in ``kpi_current``): the
catalogue's formulas (pipeline.kpi) as SQL."""

# Every count (and duration) the window views show: counters and sums that are not money
# (reach is shown apart).
_COUNTS = tuple(
    kpi.column
    for kpi in CATALOGUE
    if kpi.kind != "ratio"
    and kpi.column not in MONEY_EXPRESSIONS
    and kpi.name != "reach"
    and not kpi.internal
)

REPORT_COLUMNS: Final[tuple[str, ...]] = (
    "campaign_id",
    "campaign_name",
    "windows",
    "impressions",
    "engagements",
    "clicks",
    "visits",
    "follows",
    "unfollows",
    "net_follower_growth",
    "service_resolved",
    "conversions",
    "spend",
    "revenue",
    "profit",
    "service_savings",
    "engagement_rate",
    "ctr",
    "conversion_rate",
    "roi",
    "roas",
    "cpa",
    "cpc",
    "cpm",
    "cost_per_engagement",
    "cost_per_new_follower",
    "video_views",
    "view_through_rate",
    "budget",
    "budget_used",
)
"""Columns of :func:`campaign_report`, in order (``socialroi report`` prints these)."""

# From the campaign's record (campaign_directory), not summed from windows.
DECLARED_COLUMNS = ("campaign_name", "budget", "budget_used")

_WINDOW_TIMES = (
    "toUInt64(toUnixTimestamp(window_start)) * 1000 AS window_start_ms",
    "toUInt64(toUnixTimestamp(window_end)) * 1000 AS window_end_ms",
)
_DAY = "toString(toDate(window_start)) AS day"


def where_clause(conditions: Sequence[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""


def _campaign_filter(campaigns: Sequence[str] | None) -> list[str]:
    if campaigns is None:
        return []
    if not campaigns:
        return ["0"]
    return [f"campaign_id IN ({', '.join(sql_string(c) for c in campaigns)})"]


def _period(start: date | None, end: date | None) -> list[str]:
    """Windows starting in ``[start, end)`` (UTC days)."""
    # Epoch seconds: 18.16 cannot parse a date-only string as a DateTime.
    conditions = []
    if start is not None:
        conditions.append(f"window_start >= toDateTime({_epoch(start)})")
    if end is not None:
        conditions.append(f"window_start < toDateTime({_epoch(end)})")
    return conditions


def _epoch(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def query_rows(backend: Backend, sql: str) -> list[dict[str, Any]]:
    rows = backend.query(sql).dicts()
    for row in rows:
        if "is_final" in row:
            row["is_final"] = bool(row["is_final"])
    return rows


def _select(view: str, columns: Sequence[str], conditions: Sequence[str], order: str) -> str:
    return f"SELECT {', '.join(columns)} FROM {view} {where_clause(conditions)} ORDER BY {order}"


def _window_filter(
    window_seconds: int | None, window_kind: str | None, campaigns: Sequence[str] | None
) -> list[str]:
    conditions = _campaign_filter(campaigns)
    if window_seconds is not None:
        conditions.append(f"window_seconds = {int(window_seconds)}")
    if window_kind is not None:
        conditions.append(f"window_kind = {sql_string(window_kind)}")
    return conditions


def campaign_windows(
    backend: Backend,
    window_seconds: int | None = None,
    window_kind: str | None = None,
    campaigns: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """``kpi_campaign_windows``: every window per campaign, channels summed."""
    conditions = _window_filter(window_seconds, window_kind, campaigns)
    columns = (
        "campaign_id",
        "window_kind",
        "window_seconds",
        *_WINDOW_TIMES,
        "is_final",
        "channels",
        *_COUNTS,
        "reach_sum",
        *MONEY_EXPRESSIONS,
        *RATIO_EXPRESSIONS,
    )
    order = "campaign_id, window_kind, window_seconds, window_start_ms"
    return query_rows(backend, _select("kpi_campaign_windows", columns, conditions, order))


def channel_windows(
    backend: Backend,
    window_seconds: int | None = None,
    window_kind: str | None = None,
    campaigns: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """``kpi_channel_windows``: every window per campaign and channel."""
    conditions = _window_filter(window_seconds, window_kind, campaigns)
    columns = (
        "campaign_id",
        "channel",
        "window_kind",
        "window_seconds",
        *_WINDOW_TIMES,
        "is_final",
        *_COUNTS,
        "reach",
        *MONEY_EXPRESSIONS,
        *RATIO_EXPRESSIONS,
    )
    order = "campaign_id, channel, window_kind, window_seconds, window_start_ms"
    return query_rows(backend, _select("kpi_channel_windows", columns, conditions, order))


def roi_by_campaign(
    backend: Backend,
    start: date | None = None,
    end: date | None = None,
    campaigns: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """``roi_by_campaign``: one row per campaign and UTC day in ``[start, end)``."""
    columns = (
        "campaign_id",
        "campaign_name",
        _DAY,
        *_WINDOW_TIMES,
        "is_final",
        "conversions",
        "revenue",
        "profit",
        "media_spend",
        "effort_spend",
        "tools_spend",
        "spend",
        "service_savings",
        "roi",
        "roi_on_profit",
        "roas",
        "cpa",
        "budget",
        "budget_used",
    )
    conditions = _campaign_filter(campaigns) + _period(start, end)
    return query_rows(
        backend, _select("roi_by_campaign", columns, conditions, "campaign_id, window_start_ms")
    )


def campaigns(backend: Backend, keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """``campaign_directory``: each declared campaign's newest record, by campaign key
    (``keys``: only those, compared in lower case). Times as epoch ms (``starts_at_ms``,
    ``ends_at_ms``: ``None`` when the record has none; ``record_time_ms``)."""
    columns = (
        "campaign_key",
        "campaign_id",
        "campaign_name",
        "utm_campaign",
        "margin",
        "margin_ppm",
        "budget",
        "budget_currency",
        "budget_base",
        "budget_micros",
        "if(starts_ms < 0, NULL, starts_ms) AS starts_at_ms",
        "if(ends_ms < 0, NULL, ends_ms) AS ends_at_ms",
        "toUInt64(toUnixTimestamp(record_time)) * 1000 AS record_time_ms",
    )
    conditions = []
    if keys is not None:
        listed = ", ".join(sql_string(k.strip().lower()) for k in keys)
        conditions.append(f"campaign_key IN ({listed})" if keys else "0")
    return query_rows(backend, _select("campaign_directory", columns, conditions, "campaign_key"))


def spend_vs_return(backend: Backend) -> list[dict[str, Any]]:
    """``spend_vs_return``: campaigns bucketed by their total spend, with return per bucket."""
    columns = (
        "spend_bucket",
        "spend_bucket_label",
        "campaigns",
        "campaigns_with_revenue",
        "spend",
        "revenue",
        "profit",
        "service_savings",
        "conversions",
        "revenue_per_campaign",
        "roi",
        "roas",
    )
    return query_rows(backend, _select("spend_vs_return", columns, [], "spend_bucket"))


def social_traffic_share(
    backend: Backend, start: date | None = None, end: date | None = None
) -> list[dict[str, Any]]:
    """``social_traffic_share``: per UTC day, visits from social channels vs all visits."""
    columns = (
        _DAY,
        *_WINDOW_TIMES,
        "is_final",
        "visits",
        "social_visits",
        "direct_visits",
        "other_visits",
        "social_share",
    )
    return query_rows(
        backend, _select("social_traffic_share", columns, _period(start, end), "window_start_ms")
    )


def follower_growth(
    backend: Backend,
    start: date | None = None,
    end: date | None = None,
    campaigns: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """``follower_growth``: per campaign and UTC day; the cumulative column counts from the
    campaign's first stored day, whatever ``start`` is."""
    columns = (
        "campaign_id",
        _DAY,
        *_WINDOW_TIMES,
        "is_final",
        "follows",
        "unfollows",
        "net_follower_growth",
        "cumulative_net_follower_growth",
        "follower_revenue",
        "value_per_follower",
    )
    conditions = _campaign_filter(campaigns) + _period(start, end)
    return query_rows(
        backend, _select("follower_growth", columns, conditions, "campaign_id, window_start_ms")
    )


def service_savings(
    backend: Backend,
    start: date | None = None,
    end: date | None = None,
    campaigns: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """``service_savings``: customer-service contacts answered on social, per campaign/day."""
    columns = (
        "campaign_id",
        _DAY,
        *_WINDOW_TIMES,
        "is_final",
        "service_contacts",
        "service_resolved",
        "resolution_rate",
        "service_savings",
    )
    conditions = _campaign_filter(campaigns) + _period(start, end)
    return query_rows(
        backend, _select("service_savings", columns, conditions, "campaign_id, window_start_ms")
    )


VIEW_READERS: Final = {
    "campaign_directory": campaigns,
    "credited_conversions_current": credited_rows,
    "kpi_campaign_windows": campaign_windows,
    "kpi_channel_windows": channel_windows,
    "roi_by_campaign": roi_by_campaign,
    "spend_vs_return": spend_vs_return,
    "social_traffic_share": social_traffic_share,
    "follower_growth": follower_growth,
    "service_savings": service_savings,
    "skipped_daily": skipped_daily,
}
"""Reader function of every view the migrations create for readers (checked by a test)."""

# Every counter a period report sums: all but reach (distinct users do not add up) and
# neutral mentions (no ratio uses them); SUMMED is their select list.
_REPORT_SUMS = tuple(n for n in KPI_COUNTERS if n not in ("reach", "mentions_neutral"))
SUMMED: Final = ", ".join(f"sum({name}) AS {name}" for name in _REPORT_SUMS)


def period_conditions(
    window_seconds: int, campaigns: Sequence[str] | None, start: date | None, end: date | None
) -> list[str]:
    """The tumbling windows of ``window_seconds`` of ``campaigns`` (``None``: all) starting
    in ``[start, end)``: what every period report sums."""
    return [
        "window_kind = 'tumbling'",
        f"window_seconds = {int(window_seconds)}",
        *_campaign_filter(campaigns),
        *_period(start, end),
    ]


def derived_columns(columns: Sequence[str], extra: dict[str, str] | None = None) -> list[str]:
    """A select list of ``columns`` over a period's sums: each as itself, or as its
    expression (engagements, net follower growth, money and ratios, and ``extra``)."""
    derived = {
        **{kpi.column: expand(kpi.formula) for kpi in SUMS if kpi.unit == "count"},
        **MONEY_EXPRESSIONS,
        **RATIO_EXPRESSIONS,
        **(extra or {}),
    }
    return [name if name not in derived else f"{derived[name]} AS {name}" for name in columns]


def campaign_report(
    backend: Backend,
    start: date | None = None,
    end: date | None = None,
    window_seconds: int = DAILY_PERIOD_SECONDS,
    campaigns: Sequence[str] | None = None,
    sort: str = "campaign_id",
    descending: bool = False,
) -> list[dict[str, Any]]:
    """Per-campaign totals of the tumbling windows of ``window_seconds`` starting in
    ``[start, end)``, columns :data:`REPORT_COLUMNS`; ratios from the period's sums.

    A campaign whose record declares ``starts_at``/``ends_at`` counts only the windows
    starting from the UTC day of its start through the UTC day of its end. From the record
    too: ``campaign_name`` (the id when it has none), ``budget`` (base currency) and
    ``budget_used`` (the period's spend / budget; ``None`` without a budget).

    Raises :class:`~sinks.errors.QueryError` for a ``sort`` that is not a report column.
    Ties (and NULLs, which sort last) are ordered by campaign id.
    """
    if sort not in REPORT_COLUMNS:
        raise QueryError(f"cannot sort by {sort!r}; choose one of: {', '.join(REPORT_COLUMNS)}")
    conditions = period_conditions(window_seconds, campaigns, start, end)
    declared = {
        "campaign_name": "if(declared_name = '', campaign_id, declared_name)",
        "budget": "if(budget_micros <= 0, NULL, budget_micros / 1000000)",
        "budget_used": f"if(budget_micros <= 0, NULL, {_SPEND} / budget_micros)",
    }
    outer = derived_columns(REPORT_COLUMNS, declared)
    direction = "DESC" if descending else "ASC"
    order = f"{sort} {direction} NULLS LAST, campaign_id" if sort != "campaign_id" else sort
    if sort == "campaign_id" and descending:
        order = "campaign_id DESC"
    sql = (
        f"SELECT {', '.join(outer)} FROM ("
        f"SELECT campaign_id, uniqExact(window_start) AS windows, {SUMMED}, "
        "any(campaign_name) AS declared_name, any(budget_micros) AS budget_micros "
        f"FROM {DECLARED_WINDOWS.format(where=where_clause(conditions))} "
        f"WHERE {WITHIN_CAMPAIGN} GROUP BY campaign_id) ORDER BY {order}"
    )
    return query_rows(backend, sql)


# kpi_current's rows with their campaign's record (campaign_directory: no record gives
# '' and 0s); unmatched keys are the campaigns without one.
DECLARED_WINDOWS: Final = (
    "(SELECT *, lower(campaign_id) AS campaign_key FROM kpi_current {where}) AS windows "
    "ANY LEFT JOIN (SELECT campaign_key, campaign_name, budget_micros, starts_ms, ends_ms "
    "FROM campaign_directory) AS declared USING campaign_key"
)
# A window within the campaign's days: from the UTC day of starts_at through the UTC day
# of ends_at (0 or -1: not declared).
WITHIN_CAMPAIGN: Final = (
    "(starts_ms <= 0 OR window_start >= toDateTime(intDiv(starts_ms, 86400000) * 86400)) "
    "AND (ends_ms <= 0 OR window_start < toDateTime((intDiv(ends_ms, 86400000) + 1) * 86400))"
)
