"""Write the Grafana dashboards in deploy/grafana/dashboards/ from the queries below.

    python deploy/grafana/build_dashboards.py                 # rewrite the JSON files
    python deploy/grafana/build_dashboards.py --check         # exit 1 if a file is out of date
    python deploy/grafana/build_dashboards.py --currency USD  # money in another base currency

The JSON files are what Grafana provisions; this script is their source (a test checks they
agree, runs every ClickHouse query against a real server and every PromQL expression
through promtool). Money is shown in the base currency (SOCIALROI_COSTS__BASE_CURRENCY,
EUR by default): regenerate with ``--currency`` when yours differs.

ClickHouse panels read the reader views of migration 0006 (column lists at the top of
sinks/migrations/0006_reader_views.sql) as they are: ``kpi_campaign_windows`` (hourly
engagement), ``roi_by_campaign``, ``social_traffic_share``, ``follower_growth`` and
``service_savings`` (one-day windows, filtered on ``window_start``). The views already keep
only the newest version of every window, so no query needs FINAL or argMax. A panel that
totals a period sums the views' counters and money, then divides (never averages ratios);
ratios are NULL when their denominator is 0, as in the views.

What a first-time reader needs to read them right:
- dashboards open on the last 7 days, where ``socialroi simulate`` puts its data by default;
- every number has its unit (percent, the base currency, counts) and decimals; ROI below 0
  is red;
- windows still open (``is_final = 0``: today's partial day) are shaded as an annotation
  on every time series, and tables count the provisional days they include;
- the campaign variable's "All" is no filter at all (``$__conditionalAll``), so 10,000
  campaigns cost no 10,000-item ``IN``; it lists the campaigns of ``kpi_current`` without
  the empty id of direct traffic, which "All" includes.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from pathlib import Path
from typing import Any

from pipeline.kpi import CATALOGUE, RATIOS

OUT = Path(__file__).resolve().parent / "dashboards"
CH = {"type": "grafana-clickhouse-datasource", "uid": "socialroi-clickhouse"}
PROM = {"type": "prometheus", "uid": "socialroi-prometheus"}


def rate(metric: str) -> str:
    return f"rate({metric}[$__rate_interval])"


_RATIOS = {kpi.name: kpi for kpi in RATIOS}
_WORD = re.compile(r"\b[a-z_][a-z0-9_]*\b")


def ratio(name: str, **inputs: str) -> str:
    """The KPI catalogue's ratio ``name`` (pipeline/kpi.py) as a panel column: its formula
    over ``inputs``, the SQL of each counter or sum the formula names in the panel's query,
    in the views' units (money in base units: ``*_micros`` inputs are scaled back to
    micro-units, so the formula's own scale factors apply as written). NULL when the
    denominator is 0, as in the views."""
    kpi = _RATIOS[name]

    def sql(formula: str) -> str:
        def one(match: re.Match[str]) -> str:
            column = inputs[match[0]]
            return f"({column} * 1000000)" if match[0].endswith("_micros") else column

        return f"({_WORD.sub(one, formula)})"

    numerator, denominator = sql(kpi.formula), sql(kpi.denominator)
    return f"if({denominator} = 0, NULL, {numerator} / {denominator}) AS {kpi.column}"


# "All" means no filter: the plugin replaces the macro by 1=1 when every value is selected
# (or none), and by the condition otherwise.
CAMPAIGNS = "$__conditionalAll(campaign_id IN (${campaign:singlequote}), $campaign)"
# What a person sees for a campaign id, in the campaign variable and every per-campaign
# table: its declared name (the newest campaign.meta record, ``campaign_directory``), else
# the id; direct traffic (campaign '') is "(no campaign)". Values stay ids, which the
# panels filter on. DECLARED_NAMES joins the name (declared_name) to rows by campaign_id.
CAMPAIGN_LABEL = (
    "multiIf(declared_name != '', declared_name, campaign_id != '', campaign_id, '(no campaign)')"
)
DECLARED_NAMES = (
    "ANY LEFT JOIN (SELECT campaign_id, any(campaign_name) AS declared_name "
    "FROM campaign_directory GROUP BY campaign_id) USING campaign_id"
)

# Grafana's currency units; any other ISO code is shown as a suffix.
_GRAFANA_CURRENCIES = {
    "BRL", "CHF", "CZK", "DKK", "EUR", "GBP", "IDR", "INR", "ISK", "JPY", "KRW", "NOK", "PHP",
    "PLN", "RUB", "SEK", "UAH", "USD", "VND", "ZAR",
}  # fmt: skip

RED_BELOW_ZERO = {
    "mode": "absolute",
    "steps": [{"color": "red", "value": None}, {"color": "green", "value": 0}],
}
ORANGE_FROM_ONE = {
    "mode": "absolute",
    "steps": [{"color": "green", "value": None}, {"color": "orange", "value": 1}],
}


def units(currency: str) -> dict[str, dict[str, Any]]:
    """Field configs by kind of column: what a number means decides how it is shown."""
    money = f"currency{currency}" if currency in _GRAFANA_CURRENCIES else f"suffix: {currency}"
    return {
        "money": {"unit": money, "decimals": 2},
        "percent": {"unit": "percentunit", "decimals": 1},
        "roi": {"unit": "percentunit", "decimals": 0, "thresholds": RED_BELOW_ZERO},
        "multiple": {"unit": "suffix:x", "decimals": 2},
        "score": {"unit": "none", "decimals": 2},
        "ms": {"unit": "ms", "decimals": 0},
        "seconds": {"unit": "s", "decimals": 1},
        "count": {"unit": "locale", "decimals": 0},
        "credit": {"unit": "locale", "decimals": 1},  # attributed conversions are fractions
        "days": {"unit": "none", "decimals": 0, "thresholds": ORANGE_FROM_ONE},
    }


# The Grafana kind of each catalogue unit (pipeline/kpi.py UNITS).
KIND_OF_UNIT = {
    "count": "count",
    "micros": "money",
    "credit": "credit",
    "share": "percent",
    "score": "score",
    "roi": "roi",
    "multiple": "multiple",
    "money": "money",
    "ms": "ms",
    "seconds": "seconds",
}
# The kind of every column a ClickHouse panel returns (a test checks none is missing): the
# KPI catalogue's, and the few columns views compute beside it.
COLUMN_KINDS = {
    **{kpi.column: KIND_OF_UNIT[kpi.unit] for kpi in CATALOGUE},
    "social_visits": "count",
    "social_share": "percent",
    "provisional_days": "days",
    "budget": "money",
    "budget_used": "percent",
}
# Columns that name rather than measure.
LABEL_COLUMNS = {"time", "campaign_id", "campaign_name"}


def _properties(kind: str, table: bool, currency: str) -> dict[str, Any]:
    """Grafana field properties (by override id) for a kind of column. Thresholds colour
    a table's text (ROI below 0 red); in a time series they shade below 0 and a dashed
    line marks it."""
    found = dict(units(currency)[kind])
    thresholds = found.pop("thresholds", None)
    if thresholds is not None and table:
        found["thresholds"] = thresholds
        found["color"] = {"mode": "thresholds"}
        found["custom.cellOptions"] = {"type": "color-text"}
    elif thresholds is not None:
        found["thresholds"] = {
            "mode": "absolute",
            "steps": [
                {"color": "rgba(242, 73, 92, 0.15)", "value": None},
                {"color": "transparent", "value": 0},
            ],
        }
        found["custom.thresholdsStyle"] = {"mode": "dashed+area"}
    return found


def field_config(columns: list[str], table: bool, currency: str) -> dict[str, Any]:
    """Defaults from the first measured column; an override for every other column of
    another kind."""
    measured = [c for c in columns if c not in LABEL_COLUMNS]
    first = COLUMN_KINDS[measured[0]]
    defaults: dict[str, Any] = {}
    for key, value in _properties(first, table, currency).items():
        if key.startswith("custom."):
            defaults.setdefault("custom", {})[key.removeprefix("custom.")] = value
        else:
            defaults[key] = value
    overrides = [
        {
            "matcher": {"id": "byName", "options": column},
            "properties": [
                {"id": key, "value": value}
                for key, value in _properties(COLUMN_KINDS[column], table, currency).items()
            ],
        }
        for column in measured[1:]
        if COLUMN_KINDS[column] != first
    ]
    return {"defaults": defaults, "overrides": overrides}


def ch(
    title: str,
    sql: str,
    columns: list[str],
    kind: str = "timeseries",
    currency: str = "EUR",
    **extra: Any,
) -> dict:
    """A ClickHouse panel; ``columns`` are the columns the panel needs (tested)."""
    table = kind == "table"
    return {
        "type": kind,
        "title": title,
        "datasource": CH,
        "fieldConfig": field_config(columns, table, currency),
        "targets": [
            {
                "refId": "A",
                "datasource": CH,
                "editorType": "sql",
                "queryType": "table" if table else "timeseries",
                "format": 1 if table else 0,
                "rawSql": " ".join(sql.split()),
                "meta": {"socialroiColumns": columns},
            }
        ],
        **extra,
    }


def prom(
    title: str,
    exprs: dict[str, str],
    unit: str,
    kind: str = "timeseries",
    decimals: int | None = None,
    thresholds: dict[str, Any] | None = None,
    **extra: Any,
) -> dict:
    defaults: dict[str, Any] = {"unit": unit}
    if decimals is not None:
        defaults["decimals"] = decimals
    if thresholds is not None:
        defaults["thresholds"] = thresholds
        defaults["color"] = {"mode": "thresholds"}
    return {
        "type": kind,
        "title": title,
        "datasource": PROM,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "targets": [
            {"refId": chr(65 + i), "datasource": PROM, "expr": expr, "legendFormat": legend}
            for i, (legend, expr) in enumerate(exprs.items())
        ],
        **extra,
    }


def campaign_variable() -> dict:
    """Value: the campaign id (first column); text: ``CAMPAIGN_LABEL`` (second column).
    Direct traffic (campaign id '') is not listed: the plugin would take a selection of
    just '' for "All", and "All" already includes it."""
    sql = (
        f"SELECT campaign_id, {CAMPAIGN_LABEL} AS label FROM "
        "(SELECT DISTINCT campaign_id FROM kpi_current WHERE campaign_id != '') "
        f"{DECLARED_NAMES} ORDER BY label"
    )
    return {
        "name": "campaign",
        "label": "Campaign",
        "type": "query",
        "datasource": CH,
        "query": sql,
        "definition": sql,
        "multi": True,
        "includeAll": True,
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
    }


def provisional(view: str, where: str) -> dict:
    """A dashboard annotation shading the period of windows that are still open."""
    sql = f"""SELECT time, timeEnd, text FROM (
        SELECT min(window_start) AS time, max(window_end) AS timeEnd,
            'Provisional: these windows are still open (is_final = 0); their figures will grow'
                AS text,
            count() AS windows
        FROM {view} WHERE is_final = 0 AND $__timeFilter(window_start){where})
        WHERE windows > 0"""
    return {
        "name": "Provisional windows",
        "datasource": CH,
        "enable": True,
        "iconColor": "rgba(255, 152, 48, 0.5)",
        "target": {
            "refId": "Provisional",
            "datasource": CH,
            "editorType": "sql",
            "queryType": "table",
            "format": 1,
            "rawSql": " ".join(sql.split()),
            "meta": {"socialroiColumns": ["time", "timeEnd", "text"]},
        },
    }


def dashboard(
    uid: str,
    title: str,
    panels: list[dict],
    variables: list[dict],
    annotations: list[dict] | None = None,
) -> dict:
    for i, panel in enumerate(panels):
        panel["id"] = i + 1
        wide = panel["type"] == "table"
        panel["gridPos"] = {
            "h": 8,
            "w": 24 if wide else 12,
            "x": 0 if wide else 12 * (i % 2),
            "y": 8 * i,
        }
    return {
        "uid": uid,
        "title": title,
        "tags": ["socialroi"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        # where `socialroi simulate` puts its data by default (pipeline.simulator.default_start)
        "time": {"from": "now-7d", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": annotations or []},
        "panels": panels,
    }


def daily(view: str, columns: str, by_campaign: bool = True) -> str:
    where = f"$__timeFilter(window_start){' AND ' + CAMPAIGNS if by_campaign else ''}"
    return f"SELECT window_start AS time, {columns} FROM {view} WHERE {where}"


DAILY_PROVISIONAL = f" AND {CAMPAIGNS}"
# A worker's own series: its process metrics joined on what it says it is (any job name).
WORKERS = 'socialroi_build_info{component="worker"}'


def dashboards(currency: str = "EUR") -> dict[str, dict]:
    panel = functools.partial(ch, currency=currency)
    roi = dashboard(
        "socialroi-campaign-roi",
        "socialroi / Campaign ROI",
        [
            panel(
                "ROI, spend and return per campaign (selected period)",
                f"""SELECT campaign_id, {CAMPAIGN_LABEL} AS campaign_name, spend, budget,
                    budget_used, revenue,
                    service_savings, conversions,
                    {ratio("roi", revenue_micros="revenue",
                        service_savings_micros="service_savings", spend_micros="spend")},
                    {ratio("roas", revenue_micros="revenue", spend_micros="spend")},
                    {ratio("cpa", spend_micros="spend", conversion_credit_micros="conversions")},
                    provisional_days
                FROM (
                    SELECT campaign_id, any(campaign_name) AS declared_name,
                        sum(spend) AS spend, any(budget) AS budget,
                        sum(budget_used) AS budget_used, sum(revenue) AS revenue,
                        sum(service_savings) AS service_savings,
                        sum(conversions) AS conversions,
                        countIf(is_final = 0) AS provisional_days
                    FROM roi_by_campaign
                    WHERE $__timeFilter(window_start) AND {CAMPAIGNS}
                    GROUP BY campaign_id)
                ORDER BY spend DESC""",
                [
                    "campaign_id",
                    "campaign_name",
                    "spend",
                    "budget",
                    "budget_used",
                    "revenue",
                    "service_savings",
                    "conversions",
                    "roi",
                    "roas",
                    "cpa",
                    "provisional_days",
                ],
                kind="table",
            ),
            panel(
                "Daily ROI per campaign",
                daily("roi_by_campaign", "campaign_name, roi") + " ORDER BY time",
                ["time", "campaign_name", "roi"],
            ),
            panel(
                "Spend versus return (per campaign, selected period)",
                f"""SELECT {CAMPAIGN_LABEL} AS campaign_name, spend, revenue
                FROM (
                    SELECT campaign_id, any(campaign_name) AS declared_name,
                        sum(spend) AS spend, sum(revenue) AS revenue
                    FROM roi_by_campaign
                    WHERE $__timeFilter(window_start) AND {CAMPAIGNS}
                    GROUP BY campaign_id)
                ORDER BY spend""",
                ["campaign_name", "spend", "revenue"],
                kind="barchart",
            ),
        ],
        [campaign_variable()],
        [provisional("roi_by_campaign", DAILY_PROVISIONAL)],
    )
    hourly = "window_kind = 'tumbling' AND window_seconds = 3600"
    daily_windows = "window_kind = 'tumbling' AND window_seconds = 86400"
    engagement = dashboard(
        "socialroi-engagement",
        "socialroi / Engagement",
        [
            panel(
                "Engagement rate and CTR (hourly)",
                f"""SELECT window_start AS time,
                    {ratio("engagement_rate", engagements="sum(engagements)",
                        impressions="sum(impressions)")},
                    {ratio("ctr", clicks="sum(clicks)", impressions="sum(impressions)")}
                FROM kpi_campaign_windows
                WHERE {hourly} AND $__timeFilter(window_start) AND {CAMPAIGNS}
                GROUP BY time ORDER BY time""",
                ["time", "engagement_rate", "ctr"],
            ),
            panel(
                "Likes, comments, shares, saves (hourly)",
                f"""SELECT window_start AS time, sum(likes) AS likes, sum(comments) AS comments,
                    sum(shares) AS shares, sum(saves) AS saves
                FROM kpi_campaign_windows
                WHERE {hourly} AND $__timeFilter(window_start) AND {CAMPAIGNS}
                GROUP BY time ORDER BY time""",
                ["time", "likes", "comments", "shares", "saves"],
            ),
            panel(
                "Video views (hourly)",
                f"""SELECT window_start AS time, sum(video_views) AS video_views,
                    sum(video_completions) AS video_completions
                FROM kpi_campaign_windows
                WHERE {hourly} AND $__timeFilter(window_start) AND {CAMPAIGNS}
                GROUP BY time ORDER BY time""",
                ["time", "video_views", "video_completions"],
            ),
            panel(
                "View-through rate (hourly): video views watched to the end",
                f"""SELECT window_start AS time,
                    {ratio("view_through_rate", video_completions="sum(video_completions)",
                        video_views="sum(video_views)")}
                FROM kpi_campaign_windows
                WHERE {hourly} AND $__timeFilter(window_start) AND {CAMPAIGNS}
                GROUP BY time ORDER BY time""",
                ["time", "view_through_rate"],
            ),
            panel(
                "Engagement per campaign (selected period)",
                f"""SELECT campaign_id, {CAMPAIGN_LABEL} AS campaign_name, impressions,
                    engagements, clicks,
                    {ratio("engagement_rate", engagements="engagements",
                        impressions="impressions")},
                    {ratio("ctr", clicks="clicks", impressions="impressions")}
                FROM (
                    SELECT campaign_id, sum(impressions) AS impressions,
                        sum(engagements) AS engagements, sum(clicks) AS clicks
                    FROM kpi_campaign_windows
                    WHERE {hourly} AND $__timeFilter(window_start) AND {CAMPAIGNS}
                        AND campaign_id != ''
                    GROUP BY campaign_id) {DECLARED_NAMES}
                ORDER BY engagements DESC""",
                [
                    "campaign_id",
                    "campaign_name",
                    "impressions",
                    "engagements",
                    "clicks",
                    "engagement_rate",
                    "ctr",
                ],
                kind="table",
            ),
        ],
        [campaign_variable()],
        [provisional("kpi_campaign_windows", f" AND {hourly} AND {CAMPAIGNS}")],
    )
    traffic = dashboard(
        "socialroi-traffic",
        "socialroi / Site traffic from social",
        [
            panel(
                "Share of site visits that come from social (daily)",
                daily("social_traffic_share", "social_share", by_campaign=False) + " ORDER BY time",
                ["time", "social_share"],
            ),
            panel(
                "Visits: all and from social (daily)",
                daily("social_traffic_share", "visits, social_visits", by_campaign=False)
                + " ORDER BY time",
                ["time", "visits", "social_visits"],
            ),
        ],
        [],
        [provisional("social_traffic_share", "")],
    )
    followers = dashboard(
        "socialroi-followers",
        "socialroi / Followers",
        [
            panel(
                "Follows, unfollows and net growth (daily)",
                daily(
                    "follower_growth",
                    "sum(follows) AS follows, sum(unfollows) AS unfollows, "
                    "sum(net_follower_growth) AS net_follower_growth",
                )
                + " GROUP BY time ORDER BY time",
                ["time", "follows", "unfollows", "net_follower_growth"],
            ),
            panel(
                "Value per follower (selected period)",
                f"""SELECT campaign_id, {CAMPAIGN_LABEL} AS campaign_name,
                    net_follower_growth, follower_revenue,
                    {ratio("value_per_follower", follower_revenue_micros="follower_revenue",
                        follows="follows")},
                    provisional_days
                FROM (
                    SELECT campaign_id, sum(net_follower_growth) AS net_follower_growth,
                        sum(follower_revenue) AS follower_revenue, sum(follows) AS follows,
                        countIf(is_final = 0) AS provisional_days
                    FROM follower_growth
                    WHERE $__timeFilter(window_start) AND {CAMPAIGNS}
                    GROUP BY campaign_id) {DECLARED_NAMES}
                ORDER BY campaign_name""",
                [
                    "campaign_id",
                    "campaign_name",
                    "net_follower_growth",
                    "follower_revenue",
                    "value_per_follower",
                    "provisional_days",
                ],
                kind="table",
            ),
            panel(
                "Cost per new follower (selected period): spend / net new followers",
                f"""SELECT campaign_id, {CAMPAIGN_LABEL} AS campaign_name, spend,
                    net_follower_growth,
                    {ratio("cost_per_new_follower", spend_micros="spend",
                        net_follower_growth="net_follower_growth")},
                    provisional_days
                FROM (
                    SELECT campaign_id, sum(spend) AS spend,
                        sum(net_follower_growth) AS net_follower_growth,
                        countIf(is_final = 0) AS provisional_days
                    FROM kpi_campaign_windows
                    WHERE {daily_windows} AND $__timeFilter(window_start) AND {CAMPAIGNS}
                    GROUP BY campaign_id) {DECLARED_NAMES}
                ORDER BY campaign_id""",
                [
                    "campaign_id",
                    "campaign_name",
                    "spend",
                    "net_follower_growth",
                    "cost_per_new_follower",
                    "provisional_days",
                ],
                kind="table",
            ),
        ],
        [campaign_variable()],
        [provisional("follower_growth", DAILY_PROVISIONAL)],
    )
    service = dashboard(
        "socialroi-service-savings",
        "socialroi / Customer service savings",
        [
            panel(
                "Service savings (daily, base currency)",
                daily("service_savings", "sum(service_savings) AS service_savings")
                + " GROUP BY time ORDER BY time",
                ["time", "service_savings"],
            ),
            panel(
                "Contacts handled on social and resolved (selected period)",
                f"""SELECT campaign_id, {CAMPAIGN_LABEL} AS campaign_name,
                    service_contacts, service_resolved,
                    {ratio("resolution_rate", service_resolved="service_resolved",
                        service_contacts="service_contacts")},
                    service_savings, provisional_days
                FROM (
                    SELECT campaign_id, sum(service_contacts) AS service_contacts,
                        sum(service_resolved) AS service_resolved,
                        sum(service_savings) AS service_savings,
                        countIf(is_final = 0) AS provisional_days
                    FROM service_savings
                    WHERE $__timeFilter(window_start) AND {CAMPAIGNS}
                    GROUP BY campaign_id) {DECLARED_NAMES}
                ORDER BY service_savings DESC""",
                [
                    "campaign_id",
                    "campaign_name",
                    "service_contacts",
                    "service_resolved",
                    "resolution_rate",
                    "service_savings",
                    "provisional_days",
                ],
                kind="table",
            ),
        ],
        [campaign_variable()],
        [provisional("service_savings", DAILY_PROVISIONAL)],
    )
    health = dashboard(
        "socialroi-pipeline-health",
        "socialroi / Pipeline health",
        [
            prom(
                "Workers up",
                {"up": f"sum(up * on (job, instance) group_left () {WORKERS}) or vector(0)"},
                "none",
                kind="stat",
                decimals=0,
                thresholds={
                    "mode": "absolute",
                    "steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}],
                },
            ),
            prom(
                "Data freshness (seconds behind the clock)",
                {"freshness": "time() - max(socialroi_last_write_event_time_seconds > 0)"},
                "s",
                kind="stat",
                decimals=0,
                thresholds={
                    "mode": "absolute",
                    "steps": [
                        {"color": "green", "value": None},
                        {"color": "orange", "value": 300},
                        {"color": "red", "value": 900},  # SocialroiDataStale
                    ],
                },
            ),
            prom(
                "Consumed messages per second",
                {
                    "{{topic}} ({{stage}})": "sum by (topic, stage) ("
                    + rate("socialroi_events_consumed_total")
                    + ")"
                },
                "suffix: msg/s",
            ),
            prom(
                "Consumer lag",
                {"{{topic}}": "sum by (topic) (socialroi_consumer_lag)"},
                "suffix: msgs",
                decimals=0,
            ),
            prom(
                "Dead letters per second, by reason",
                {"{{reason}}": "sum by (reason) (" + rate("socialroi_dead_letters_total") + ")"},
                "suffix: msg/s",
            ),
            prom(
                "Late events per second",
                {"{{topic}}": "sum by (topic) (" + rate("socialroi_late_events_total") + ")"},
                "suffix: msg/s",
            ),
            prom(
                "ClickHouse sink",
                {
                    "outage": "max(socialroi_sink_outage)",
                    "failed writes/s": "sum(rate(socialroi_sink_errors_total[$__rate_interval]))",
                    "p95 flush seconds": "histogram_quantile(0.95, sum by (le) "
                    "(rate(socialroi_sink_flush_seconds_bucket[$__rate_interval])))",
                },
                "short",
            ),
            prom(
                "Rows written per second",
                {"{{table}}": "sum by (table) (" + rate("socialroi_sink_rows_written_total") + ")"},
                "suffix: rows/s",
            ),
            prom(
                "Batch processing p95 seconds",
                {
                    "{{stage}}": "histogram_quantile(0.95, sum by (le, stage) "
                    "(rate(socialroi_batch_seconds_bucket[$__rate_interval])))"
                },
                "s",
            ),
            prom(
                "Rebalances (15 min) and assigned partitions",
                {
                    "rebalances": "sum(increase(socialroi_rebalances_total[15m]))",
                    "assigned partitions": "sum(socialroi_assigned_partitions)",
                },
                "short",
                decimals=0,
            ),
            prom(
                "Worker memory (resident)",
                {
                    "{{instance}} RSS": "process_resident_memory_bytes"
                    f" * on (job, instance) group_left () {WORKERS}",
                },
                "bytes",
            ),
        ],
        [],
    )
    return {
        "pipeline-health.json": health,
        "campaign-roi.json": roi,
        "engagement.json": engagement,
        "traffic.json": traffic,
        "followers.json": followers,
        "service-savings.json": service,
    }


def render(currency: str = "EUR") -> dict[str, str]:
    return {
        name: json.dumps(d, indent=2, ensure_ascii=False) + "\n"
        for name, d in dashboards(currency).items()
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Write the Grafana dashboards.")
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is out of date")
    parser.add_argument(
        "--currency", default="EUR", help="base currency (SOCIALROI_COSTS__BASE_CURRENCY)"
    )
    args = parser.parse_args(argv)
    stale = []
    for name, text in render(args.currency.upper()).items():
        path = OUT / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date (run python deploy/grafana/build_dashboards.py):", *stale)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
