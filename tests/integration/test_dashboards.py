"""Every Grafana panel query runs: ClickHouse SQL on the real 18.16 server, PromQL in promtool.

Grafana macros are replaced by a test implementation (``expand``) that follows the
grafana-clickhouse-datasource plugin: ``$__timeFilter(col)`` is a closed range on ``col``,
``${var:singlequote}`` a comma-separated list of quoted values.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from clickhouse_driver import Client  # type: ignore[import-untyped]
from pydantic import SecretStr

from pipeline.kpi import KPI_COUNTERS
from pipeline.ports import CampaignRow, KpiSnapshot
from pipeline.settings import ClickHouseSettings
from sinks import ClickHouseSink, apply_migrations, open_backend
from tests.integration.prometheus_helpers import PrivatePrometheus, free_port, promtool
from tests.integration.test_prometheus import exported_names

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy/grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DAY_MS = 86_400_000
START_MS = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp() * 1000)
CAMPAIGNS = ("c-alpha", "c-beta")
CH_TYPE = "grafana-clickhouse-datasource"


def _load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def _targets(datasource_type: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path in DASHBOARDS:
        for panel in _load(path)["panels"]:
            for target in panel["targets"]:
                if target["datasource"]["type"] == datasource_type:
                    yield path.name, panel["title"], target


def expand(sql: str, start: datetime, end: datetime, variables: dict[str, list[str]]) -> str:
    """Grafana's macros and variables, the way the ClickHouse plugin expands them."""
    lo, hi = int(start.timestamp()), int(end.timestamp())
    sql = re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        lambda m: f"{m[1]} >= toDateTime({lo}) AND {m[1]} <= toDateTime({hi})",
        sql,
    )
    sql = sql.replace("$__fromTime", f"toDateTime({lo})").replace("$__toTime", f"toDateTime({hi})")
    for name, values in variables.items():
        quoted = ", ".join("'" + v.replace("'", "\\'") + "'" for v in values)
        sql = sql.replace(f"${{{name}:singlequote}}", quoted).replace(f"${name}", quoted)
    assert "$" not in sql, f"unexpanded macro or variable in: {sql}"
    return sql


def test_dashboard_json_is_what_the_builder_writes() -> None:
    spec = importlib.util.spec_from_file_location("build", GRAFANA / "build_dashboards.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    rendered = build.render()
    assert sorted(rendered) == [p.name for p in DASHBOARDS]
    for path in DASHBOARDS:
        assert path.read_text() == rendered[path.name], (
            f"{path.name} is stale: run python deploy/grafana/build_dashboards.py"
        )


def test_every_dashboard_is_provisioned_from_known_datasources() -> None:
    import yaml

    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/datasources.yml").read_text())
    uids = {d["uid"]: d for d in sources["datasources"]}
    assert uids["socialroi-clickhouse"]["jsonData"]["username"] == "socialroi_reader"
    assert (
        uids["socialroi-clickhouse"]["secureJsonData"]["password"]
        == "${SOCIALROI_GRAFANA_CH_PASSWORD}"
    )
    for path in DASHBOARDS:
        dashboard = _load(path)
        for panel in dashboard["panels"]:
            for target in [panel, *panel["targets"]]:
                assert target["datasource"]["uid"] in uids, f"{path.name}: {panel['title']}"
    assert {_load(p)["uid"] for p in DASHBOARDS}.__len__() == len(DASHBOARDS)


def _snapshots() -> list[KpiSnapshot]:
    """Two campaigns x two channels x two days (daily and hourly windows), with an older
    version of one window that readers must not see."""
    rows = []
    for c, campaign in enumerate(CAMPAIGNS):
        for h, channel in enumerate(("facebook", "newsletter")):
            for day in range(2):
                counters = {name: 0 for name in KPI_COUNTERS}
                counters.update(
                    impressions=1000 * (c + 1),
                    likes=40 + h,
                    comments=5,
                    shares=3,
                    saves=2,
                    clicks=30,
                    follows=12,
                    unfollows=2,
                    visits=100 + 50 * h,
                    conversion_credit_micros=3_000_000,
                    revenue_micros=500_000_000,
                    media_spend_micros=200_000_000 * (c + 1),
                    service_contacts=10,
                    service_resolved=8,
                    service_savings_micros=32_000_000,
                )
                counters = {k: v for k, v in counters.items() if k in KPI_COUNTERS}
                for seconds in (86400, 3600):
                    begin = START_MS + day * DAY_MS
                    rows.append(
                        KpiSnapshot(
                            campaign,
                            channel,
                            "tumbling",
                            seconds,
                            begin,
                            begin + seconds * 1000,
                            True,
                            5,
                            counters,
                        )
                    )
    stale = rows[0]
    rows.append(
        KpiSnapshot(
            stale.campaign_id,
            stale.channel,
            stale.window_kind,
            stale.window_seconds,
            stale.window_start_ms,
            stale.window_end_ms,
            False,
            1,
            {k: v * 100 for k, v in stale.counters.items()},
        )
    )
    return rows


@pytest.fixture
def dashboard_database(fresh_server_url: str) -> Iterator[Client]:
    """A fresh database with the migrations applied and a few KPI rows written."""
    backend = open_backend(fresh_server_url)
    backend.start()
    try:
        apply_migrations(backend)
    finally:
        backend.close()

    async def write() -> None:
        sink = ClickHouseSink(ClickHouseSettings(url=SecretStr(fresh_server_url)))
        await sink.start()
        try:
            sink.add_snapshots(_snapshots())
            # c-beta is declared: a name and a budget of 4,000 (base currency)
            sink.add_campaigns([CampaignRow(
                "c-beta", "c-beta", "Beta launch", "", -1, 4000.0, "EUR", 4_000_000_000,
                -1, -1, "m-1", 1_790_812_800_000,
            )])  # fmt: skip
            await sink.flush()
        finally:
            await sink.close()

    import asyncio

    asyncio.run(write())
    from urllib.parse import urlsplit

    parts = urlsplit(fresh_server_url)
    client = Client(
        host=parts.hostname,
        port=parts.port,
        user=parts.username or "default",
        password=parts.password or "",
        database=parts.path.lstrip("/"),
    )
    try:
        yield client
    finally:
        client.disconnect()


CH_TARGETS = list(_targets(CH_TYPE))


def test_there_are_clickhouse_panels_in_every_business_dashboard() -> None:
    names = {name for name, _, _ in CH_TARGETS}
    assert names == {p.name for p in DASHBOARDS} - {"pipeline-health.json"}


def test_every_clickhouse_panel_query_runs_and_returns_its_columns(
    dashboard_database: Client,
) -> None:
    start = datetime(2026, 9, 30, tzinfo=UTC)
    end = datetime(2026, 10, 10, tzinfo=UTC)
    variables = {"campaign": list(CAMPAIGNS)}
    for name, title, target in CH_TARGETS:
        sql = expand(target["rawSql"], start, end, variables)
        rows, columns = dashboard_database.execute(sql, with_column_types=True)
        got = [column for column, _ in columns]
        assert got == target["meta"]["socialroiColumns"], f"{name} / {title}: {got}"
        assert rows, f"{name} / {title} returned no rows:\n{sql}"
        assert "time" not in got or got.index("time") == 0, f"{name} / {title}"

    # One number each panel family could get wrong: the ROI table over the whole period.
    roi = next(
        t for n, _, t in CH_TARGETS if n == "campaign-roi.json" and t["queryType"] == "table"
    )
    rows, columns = dashboard_database.execute(
        expand(roi["rawSql"], start, end, variables), with_column_types=True
    )
    table = {row[0]: dict(zip([c for c, _ in columns], row, strict=True)) for row in rows}
    # c-beta: 2 channels x 2 days x 400 spend; revenue 4 x 500; savings 4 x 32
    beta = table["c-beta"]
    assert beta["spend"] == pytest.approx(1600)
    assert beta["revenue"] == pytest.approx(2000)
    assert beta["roi"] == pytest.approx((2000 + 128 - 1600) / 1600)
    assert (beta["campaign_name"], beta["budget"]) == ("Beta launch", 4000)
    assert beta["budget_used"] == pytest.approx(1600 / 4000)
    assert (table["c-alpha"]["campaign_name"], table["c-alpha"]["budget"]) == ("c-alpha", None)
    # the superseded version (100x counters) of c-alpha's first window is not counted
    assert table["c-alpha"]["spend"] == pytest.approx(800)

    # A campaign filter narrows the result; an empty period is empty, not an error.
    for _name, title, target in CH_TARGETS:
        sql = expand(target["rawSql"], start, end, {"campaign": ["c-alpha"]})
        rows = dashboard_database.execute(sql)
        columns = target["meta"]["socialroiColumns"]
        if "campaign_id" in columns and "${campaign" in target["rawSql"]:
            index = target["meta"]["socialroiColumns"].index("campaign_id")
            assert {r[index] for r in rows} == {"c-alpha"}, title
        after = datetime(2027, 1, 1, tzinfo=UTC)
        later = expand(target["rawSql"], after, after.replace(day=2), variables)
        assert dashboard_database.execute(later) == [], title


def test_dashboard_variable_queries_run(dashboard_database: Client) -> None:
    for path in DASHBOARDS:
        for variable in _load(path)["templating"]["list"]:
            if variable["datasource"]["type"] == CH_TYPE:
                rows = dashboard_database.execute(variable["query"])
                assert [r[0] for r in rows] == list(CAMPAIGNS), path.name


PROM_TARGETS = list(_targets("prometheus"))


def test_every_prometheus_panel_expression_parses_and_runs(tmp_path: Path) -> None:
    assert PROM_TARGETS, "no Prometheus panel"
    exported = exported_names() | {"up"}
    server = PrivatePrometheus(tmp_path / "prometheus", [f"127.0.0.1:{free_port()}"])
    server.start()
    try:
        for name, title, target in PROM_TARGETS:
            expr = target["expr"].replace("$__rate_interval", "1m")
            assert "$" not in expr, f"{name} / {title}: unexpanded variable"
            metrics = set(re.findall(r"\b(socialroi_[a-z_]+|up)\b", expr))
            assert metrics and metrics <= exported, f"{name} / {title}: {metrics - exported}"
            result = promtool("query", "instant", server.url, expr)
            assert result.returncode == 0, f"{name} / {title}: {expr}\n{result.stderr}"
    finally:
        server.stop()
