"""Write the Grafana dashboards in deploy/grafana/dashboards/ from the queries below.

    python deploy/grafana/build_dashboards.py          # rewrite the JSON files
    python deploy/grafana/build_dashboards.py --check  # exit 1 if a file is out of date

The JSON files are what Grafana provisions; this script is their source (a test checks they
agree, runs every ClickHouse query against a real server and every PromQL expression
through promtool).

ClickHouse panels read the reader views of migration 0006 (column lists at the top of
sinks/migrations/0006_reader_views.sql) as they are: ``kpi_campaign_windows`` (hourly
engagement), ``roi_by_campaign``, ``social_traffic_share``, ``follower_growth`` and
``service_savings`` (one-day windows, filtered on ``window_start``). The views already keep
only the newest version of every window, so no query needs FINAL or argMax. A panel that
totals a period sums the views' counters and money, then divides (never averages ratios);
ratios are NULL when their denominator is 0, as in the views. The campaign variable lists
the campaigns of ``kpi_current``, the view the reader views are built on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
CH = {"type": "grafana-clickhouse-datasource", "uid": "socialroi-clickhouse"}
PROM = {"type": "prometheus", "uid": "socialroi-prometheus"}


def rate(metric: str) -> str:
    return f"rate({metric}[$__rate_interval])"


CAMPAIGNS = "campaign_id IN (${campaign:singlequote})"


def ch(title: str, sql: str, columns: list[str], kind: str = "timeseries", **extra: Any) -> dict:
    """A ClickHouse panel; ``columns`` are the columns the panel needs (tested)."""
    table = kind == "table"
    return {
        "type": kind,
        "title": title,
        "datasource": CH,
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


def prom(title: str, exprs: dict[str, str], kind: str = "timeseries", **extra: Any) -> dict:
    return {
        "type": kind,
        "title": title,
        "datasource": PROM,
        "targets": [
            {"refId": chr(65 + i), "datasource": PROM, "expr": expr, "legendFormat": legend}
            for i, (legend, expr) in enumerate(exprs.items())
        ],
        **extra,
    }


def campaign_variable() -> dict:
    return {
        "name": "campaign",
        "label": "Campaign",
        "type": "query",
        "datasource": CH,
        "query": "SELECT DISTINCT campaign_id FROM kpi_current ORDER BY campaign_id",
        "definition": "SELECT DISTINCT campaign_id FROM kpi_current ORDER BY campaign_id",
        "multi": True,
        "includeAll": True,
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
    }


def dashboard(uid: str, title: str, panels: list[dict], variables: list[dict]) -> dict:
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
        "time": {"from": "now-30d", "to": "now"},
        "templating": {"list": variables},
        "panels": panels,
    }


def daily(view: str, columns: str, by_campaign: bool = True) -> str:
    where = f"$__timeFilter(window_start){' AND ' + CAMPAIGNS if by_campaign else ''}"
    return f"SELECT window_start AS time, {columns} FROM {view} WHERE {where}"


def dashboards() -> dict[str, dict]:
    roi = dashboard(
        "socialroi-campaign-roi",
        "socialroi / Campaign ROI",
        [
            ch(
                "ROI, spend and return per campaign (selected period)",
                f"""SELECT campaign_id, campaign_name, spend, budget, budget_used, revenue,
                    service_savings, conversions,
                    if(spend = 0, NULL, (revenue + service_savings - spend) / spend) AS roi,
                    if(spend = 0, NULL, revenue / spend) AS roas,
                    if(conversions = 0, NULL, spend / conversions) AS cpa
                FROM (
                    SELECT campaign_id, any(campaign_name) AS campaign_name,
                        sum(spend) AS spend, any(budget) AS budget,
                        sum(budget_used) AS budget_used, sum(revenue) AS revenue,
                        sum(service_savings) AS service_savings,
                        sum(conversions) AS conversions
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
                ],
                kind="table",
            ),
            ch(
                "Daily ROI per campaign",
                daily("roi_by_campaign", "campaign_name, roi") + " ORDER BY time",
                ["time", "campaign_name", "roi"],
            ),
            ch(
                "Spend versus return (per campaign, selected period)",
                f"""SELECT any(campaign_name) AS campaign_name, sum(spend) AS spend,
                    sum(revenue) AS revenue
                FROM roi_by_campaign
                WHERE $__timeFilter(window_start) AND {CAMPAIGNS}
                GROUP BY campaign_id ORDER BY spend""",
                ["campaign_name", "spend", "revenue"],
                kind="barchart",
            ),
        ],
        [campaign_variable()],
    )
    engagement = dashboard(
        "socialroi-engagement",
        "socialroi / Engagement",
        [
            ch(
                "Engagement rate and CTR (hourly)",
                f"""SELECT window_start AS time,
                    if(sum(impressions) = 0, NULL, sum(engagements) / sum(impressions))
                        AS engagement_rate,
                    if(sum(impressions) = 0, NULL, sum(clicks) / sum(impressions)) AS ctr
                FROM kpi_campaign_windows
                WHERE window_kind = 'tumbling' AND window_seconds = 3600
                    AND $__timeFilter(window_start) AND {CAMPAIGNS}
                GROUP BY time ORDER BY time""",
                ["time", "engagement_rate", "ctr"],
            ),
            ch(
                "Likes, comments, shares, saves (hourly)",
                f"""SELECT window_start AS time, sum(likes) AS likes, sum(comments) AS comments,
                    sum(shares) AS shares, sum(saves) AS saves
                FROM kpi_campaign_windows
                WHERE window_kind = 'tumbling' AND window_seconds = 3600
                    AND $__timeFilter(window_start) AND {CAMPAIGNS}
                GROUP BY time ORDER BY time""",
                ["time", "likes", "comments", "shares", "saves"],
            ),
        ],
        [campaign_variable()],
    )
    traffic = dashboard(
        "socialroi-traffic",
        "socialroi / Site traffic from social",
        [
            ch(
                "Share of site visits that come from social (daily)",
                daily("social_traffic_share", "social_share", by_campaign=False) + " ORDER BY time",
                ["time", "social_share"],
            ),
            ch(
                "Visits: all and from social (daily)",
                daily("social_traffic_share", "visits, social_visits", by_campaign=False)
                + " ORDER BY time",
                ["time", "visits", "social_visits"],
            ),
        ],
        [],
    )
    followers = dashboard(
        "socialroi-followers",
        "socialroi / Followers",
        [
            ch(
                "Follows, unfollows and net growth (daily)",
                daily(
                    "follower_growth",
                    "sum(follows) AS follows, sum(unfollows) AS unfollows, "
                    "sum(net_follower_growth) AS net_follower_growth",
                )
                + " GROUP BY time ORDER BY time",
                ["time", "follows", "unfollows", "net_follower_growth"],
            ),
            ch(
                "Value per follower (selected period)",
                f"""SELECT campaign_id, net_follower_growth, follower_revenue,
                    if(follows = 0, NULL, follower_revenue / follows) AS value_per_follower
                FROM (
                    SELECT campaign_id, sum(net_follower_growth) AS net_follower_growth,
                        sum(follower_revenue) AS follower_revenue, sum(follows) AS follows
                    FROM follower_growth
                    WHERE $__timeFilter(window_start) AND {CAMPAIGNS}
                    GROUP BY campaign_id)
                ORDER BY campaign_id""",
                ["campaign_id", "net_follower_growth", "follower_revenue", "value_per_follower"],
                kind="table",
            ),
        ],
        [campaign_variable()],
    )
    service = dashboard(
        "socialroi-service-savings",
        "socialroi / Customer service savings",
        [
            ch(
                "Service savings (daily, base currency)",
                daily("service_savings", "sum(service_savings) AS service_savings")
                + " GROUP BY time ORDER BY time",
                ["time", "service_savings"],
            ),
            ch(
                "Contacts handled on social and resolved (selected period)",
                f"""SELECT campaign_id, service_contacts, service_resolved,
                    if(service_contacts = 0, NULL, service_resolved / service_contacts)
                        AS resolution_rate,
                    service_savings
                FROM (
                    SELECT campaign_id, sum(service_contacts) AS service_contacts,
                        sum(service_resolved) AS service_resolved,
                        sum(service_savings) AS service_savings
                    FROM service_savings
                    WHERE $__timeFilter(window_start) AND {CAMPAIGNS}
                    GROUP BY campaign_id)
                ORDER BY service_savings DESC""",
                [
                    "campaign_id",
                    "service_contacts",
                    "service_resolved",
                    "resolution_rate",
                    "service_savings",
                ],
                kind="table",
            ),
        ],
        [campaign_variable()],
    )
    health = dashboard(
        "socialroi-pipeline-health",
        "socialroi / Pipeline health",
        [
            prom("Workers up", {"up": 'sum(up{job=~"socialroi.*"})'}, kind="stat"),
            prom(
                "Data freshness (seconds behind the clock)",
                {"freshness": "time() - max(socialroi_last_write_event_time_seconds > 0)"},
                kind="stat",
            ),
            prom(
                "Consumed messages per second",
                {
                    "{{topic}} ({{stage}})": "sum by (topic, stage) ("
                    + rate("socialroi_events_consumed_total")
                    + ")"
                },
            ),
            prom("Consumer lag", {"{{topic}}": "sum by (topic) (socialroi_consumer_lag)"}),
            prom(
                "Dead letters per second, by reason",
                {"{{reason}}": "sum by (reason) (" + rate("socialroi_dead_letters_total") + ")"},
            ),
            prom(
                "Late events per second",
                {"{{topic}}": "sum by (topic) (" + rate("socialroi_late_events_total") + ")"},
            ),
            prom(
                "ClickHouse sink",
                {
                    "outage": "max(socialroi_sink_outage)",
                    "failed writes/s": "sum(rate(socialroi_sink_errors_total[$__rate_interval]))",
                    "p95 flush seconds": "histogram_quantile(0.95, sum by (le) "
                    "(rate(socialroi_sink_flush_seconds_bucket[$__rate_interval])))",
                },
            ),
            prom(
                "Rows written per second",
                {"{{table}}": "sum by (table) (" + rate("socialroi_sink_rows_written_total") + ")"},
            ),
            prom(
                "Batch processing p95 seconds",
                {
                    "{{stage}}": "histogram_quantile(0.95, sum by (le, stage) "
                    "(rate(socialroi_batch_seconds_bucket[$__rate_interval])))"
                },
            ),
            prom(
                "Rebalances (15 min) and assigned partitions",
                {
                    "rebalances": "sum(increase(socialroi_rebalances_total[15m]))",
                    "assigned partitions": "sum(socialroi_assigned_partitions)",
                },
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


def render() -> dict[str, str]:
    return {name: json.dumps(d, indent=2) + "\n" for name, d in dashboards().items()}


def main(argv: list[str]) -> int:
    stale = []
    for name, text in render().items():
        path = OUT / name
        if "--check" in argv:
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
