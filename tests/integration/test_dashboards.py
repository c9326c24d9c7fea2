"""Every Grafana panel query runs: ClickHouse SQL on the real 18.16 server, PromQL in promtool.

Grafana macros are replaced by a test implementation (``expand``) that follows the
grafana-clickhouse-datasource plugin: ``$__timeFilter(col)`` is a closed range on ``col``,
``${var:singlequote}`` a comma-separated list of quoted values (every value when "All" is
selected), ``$__conditionalAll(condition, $var)`` is ``1=1`` when "All" (or nothing) is
selected and the condition otherwise.

The data sits where ``socialroi simulate`` puts it by default (days that end before today,
``pipeline.simulator.default_start``), and the queries run over each dashboard's own
default range: what a new user sees on first open.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from clickhouse_driver import Client  # type: ignore[import-untyped]
from pydantic import SecretStr

from pipeline.kpi import KPI_COUNTERS
from pipeline.ports import CampaignRow, KpiSnapshot
from pipeline.settings import ClickHouseSettings
from pipeline.simulator import default_start
from sinks import ClickHouseSink, apply_migrations, open_backend
from tests.integration.prometheus_helpers import PrivatePrometheus, free_port, promtool
from tests.integration.test_prometheus import exported_names

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy/grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DAY_MS = 86_400_000
NOW = datetime.now(UTC)
# The simulator's default first day; the second day is still open (provisional).
DAY0 = datetime.fromisoformat(default_start(2, NOW))
START_MS = int(DAY0.timestamp() * 1000)
CAMPAIGNS = ("c-alpha", "c-beta")
DIRECT = ""  # conversions with no touchpoint: campaign '' (channel direct)
CH_TYPE = "grafana-clickhouse-datasource"
ALL = "$__all"


def _load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def _targets(datasource_type: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path in DASHBOARDS:
        for panel in _load(path)["panels"]:
            for target in panel["targets"]:
                if target["datasource"]["type"] == datasource_type:
                    yield path.name, panel["title"], target


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build", GRAFANA / "build_dashboards.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build


def default_range(path: Path, now: datetime = NOW) -> tuple[datetime, datetime]:
    """A dashboard's default time range (``now-Nd`` to ``now``) at ``now``."""
    time = _load(path)["time"]
    assert time["to"] == "now", path.name
    match = re.fullmatch(r"now-(\d+)d", time["from"])
    assert match, f"{path.name}: {time['from']}"
    return now - timedelta(days=int(match[1])), now


def _conditional_all(sql: str, variables: dict[str, list[str]]) -> str:
    """``$__conditionalAll(condition, $var)``: its arguments split at the top-level comma,
    as the plugin does; ``1=1`` when ``var`` is "All" or empty."""
    macro = "$__conditionalAll("
    while (at := sql.find(macro)) != -1:
        depth, args, begin = 1, [], at + len(macro)
        for i in range(begin, len(sql)):
            if sql[i] == "(":
                depth += 1
            elif sql[i] == ")":
                depth -= 1
            if (sql[i] == "," and depth == 1) or depth == 0:
                args.append(sql[begin:i])
                begin = i + 1
            if depth == 0:
                break
        condition, variable = args
        selected = variables[variable.strip().lstrip("$").strip("{}")]
        sql = sql[:at] + ("1=1" if selected in ([ALL], []) else condition) + sql[begin:]
    return sql


def expand(
    sql: str,
    start: datetime,
    end: datetime,
    variables: dict[str, list[str]],
    everything: dict[str, list[str]] | None = None,
) -> str:
    """Grafana's macros and variables, the way the ClickHouse plugin expands them.
    ``variables`` maps a variable to its selected values, or to ``[ALL]`` for "All", which
    Grafana expands to every value in ``everything``."""
    lo, hi = int(start.timestamp()), int(end.timestamp())

    sql = _conditional_all(sql, variables)
    sql = re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        lambda m: f"{m[1]} >= toDateTime({lo}) AND {m[1]} <= toDateTime({hi})",
        sql,
    )
    sql = sql.replace("$__fromTime", f"toDateTime({lo})").replace("$__toTime", f"toDateTime({hi})")
    for name, values in variables.items():
        if f"${name}" not in sql and f"${{{name}" not in sql:
            continue
        if values == [ALL]:
            values = (everything or {})[name]
        quoted = ", ".join("'" + v.replace("'", "\\'") + "'" for v in values)
        sql = sql.replace(f"${{{name}:singlequote}}", quoted).replace(f"${name}", quoted)
    assert "$" not in sql, f"unexpanded macro or variable in: {sql}"
    return sql


def test_dashboard_json_is_what_the_builder_writes() -> None:
    rendered = _builder().render()
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


def _counters(**values: int) -> dict[str, int]:
    counters = {name: 0 for name in KPI_COUNTERS}
    counters.update(values)
    return {k: v for k, v in counters.items() if k in KPI_COUNTERS}


def _snapshots() -> list[KpiSnapshot]:
    """Two campaigns x two channels x two days (daily and hourly windows) and direct
    traffic (campaign ''), the second day still open, with an older version of one window
    that readers must not see."""
    rows = []
    cells = [(c, campaign, h, channel) for c, campaign in enumerate(CAMPAIGNS)
             for h, channel in enumerate(("facebook", "newsletter"))]  # fmt: skip
    cells.append((0, DIRECT, 0, "direct"))
    for c, campaign, h, channel in cells:
        for day in range(2):
            if campaign == DIRECT:
                counters = _counters(
                    visits=70, conversion_credit_micros=2_000_000, revenue_micros=90_000_000
                )
            else:
                counters = _counters(
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
                        day == 0,  # the second day is still open
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


def _path(name: str) -> Path:
    return GRAFANA / "dashboards" / name


def test_every_clickhouse_panel_shows_data_on_first_open(dashboard_database: Client) -> None:
    """Each dashboard's default range, "All" campaigns: every panel has rows."""
    variables = {"campaign": [ALL]}
    everything = {"campaign": list(CAMPAIGNS)}
    for name, title, target in CH_TARGETS:
        start, end = default_range(_path(name))
        sql = expand(target["rawSql"], start, end, variables, everything)
        rows, columns = dashboard_database.execute(sql, with_column_types=True)
        got = [column for column, _ in columns]
        assert got == target["meta"]["socialroiColumns"], f"{name} / {title}: {got}"
        assert rows, f"{name} / {title} returned no rows on first open:\n{sql}"
        assert "time" not in got or got.index("time") == 0, f"{name} / {title}"

    # One number each panel family could get wrong: the ROI table over the whole period.
    roi = next(
        t for n, _, t in CH_TARGETS if n == "campaign-roi.json" and t["queryType"] == "table"
    )
    start, end = default_range(_path("campaign-roi.json"))
    rows, columns = dashboard_database.execute(
        expand(roi["rawSql"], start, end, variables, everything), with_column_types=True
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
    assert beta["provisional_days"] == 1  # the second day is open
    # the superseded version (100x counters) of c-alpha's first window is not counted
    assert table["c-alpha"]["spend"] == pytest.approx(800)
    # "All" is no filter: direct traffic (campaign '') is in it, though not in the list
    assert table[DIRECT]["revenue"] == pytest.approx(180)


def test_every_per_campaign_table_shows_the_declared_name(dashboard_database: Client) -> None:
    """Where a table names campaigns, a person reads names: the declared one (c-beta's
    record), else the id; direct traffic reads "(no campaign)"."""
    variables = {"campaign": [ALL]}
    tables = [
        (name, title, target)
        for name, title, target in CH_TARGETS
        if "campaign_id" in target["meta"]["socialroiColumns"]
    ]
    assert {name for name, _, _ in tables} == {
        "campaign-roi.json", "engagement.json", "followers.json", "service-savings.json",
    }  # fmt: skip
    for name, title, target in tables:
        columns = target["meta"]["socialroiColumns"]
        assert columns[:2] == ["campaign_id", "campaign_name"], f"{name} / {title}"
        start, end = default_range(_path(name))
        sql = expand(target["rawSql"], start, end, variables, {"campaign": list(CAMPAIGNS)})
        shown = {row[0]: row[1] for row in dashboard_database.execute(sql)}
        assert shown["c-beta"] == "Beta launch", f"{name} / {title}"
        assert shown["c-alpha"] == "c-alpha", f"{name} / {title}"
        if DIRECT in shown:
            assert shown[DIRECT] == "(no campaign)", f"{name} / {title}"


def test_a_campaign_filter_narrows_and_an_empty_period_is_empty(
    dashboard_database: Client,
) -> None:
    start, end = NOW - timedelta(days=30), NOW
    for _name, title, target in CH_TARGETS:
        sql = expand(target["rawSql"], start, end, {"campaign": ["c-alpha"]})
        assert "IN ('c-alpha')" in sql or "${campaign" not in target["rawSql"], title
        rows = dashboard_database.execute(sql)
        columns = target["meta"]["socialroiColumns"]
        if "campaign_id" in columns and "${campaign" in target["rawSql"]:
            index = columns.index("campaign_id")
            assert {r[index] for r in rows} == {"c-alpha"}, title
        after = NOW + timedelta(days=400)
        later = expand(target["rawSql"], after, after + timedelta(days=1), {"campaign": [ALL]})
        assert dashboard_database.execute(later) == [], title


def test_all_campaigns_is_no_filter_whatever_the_number_of_campaigns() -> None:
    """At 10,000 campaigns "All" must not become a 10,000-item IN (...)."""
    many = {"campaign": [f"campaign-{i:05d}" for i in range(10_000)]}
    start, end = NOW - timedelta(days=7), NOW
    filtered = [t for t in CH_TARGETS if "${campaign" in t[2]["rawSql"]]
    assert len(filtered) >= 6
    for name, title, target in filtered:
        few = expand(target["rawSql"], start, end, {"campaign": [ALL]}, {"campaign": ["a"]})
        lots = expand(target["rawSql"], start, end, {"campaign": [ALL]}, many)
        assert lots == few, f"{name} / {title}: the query grows with the campaigns"
        assert "campaign-00001" not in lots and "1=1" in lots, f"{name} / {title}"


def test_the_campaign_variable_lists_campaigns_but_not_direct_traffic(
    dashboard_database: Client,
) -> None:
    for path in DASHBOARDS:
        for variable in _load(path)["templating"]["list"]:
            if variable["datasource"]["type"] == CH_TYPE:
                assert variable["includeAll"] and variable["multi"], path.name
                assert variable["current"]["value"] == ALL, path.name
                rows = dashboard_database.execute(variable["query"])
                # the plugin: first column the value, second the text shown: the declared
                # name where a campaign record gives one, else the id; sorted by it
                assert sorted(r[0] for r in rows) == sorted(CAMPAIGNS), path.name
                shown = dict(rows)
                assert shown == {"c-alpha": "c-alpha", "c-beta": "Beta launch"}, path.name
                assert [r[1] for r in rows] == sorted(shown.values()), path.name


def test_provisional_windows_are_an_annotation_on_every_dashboard(
    dashboard_database: Client,
) -> None:
    for path in DASHBOARDS:
        if path.name == "pipeline-health.json":
            continue
        annotations = _load(path)["annotations"]["list"]
        assert [a["name"] for a in annotations] == ["Provisional windows"], path.name
        target = annotations[0]["target"]
        assert annotations[0]["datasource"]["type"] == CH_TYPE
        start, end = default_range(path)
        rows, columns = dashboard_database.execute(
            expand(target["rawSql"], start, end, {"campaign": [ALL]}), with_column_types=True
        )
        assert [c for c, _ in columns] == ["time", "timeEnd", "text"], path.name
        assert len(rows) == 1, path.name
        began, ended, text = rows[0]
        began, ended = began.replace(tzinfo=None), ended.replace(tzinfo=None)
        # the open second day: its day window, or its first hour on the hourly dashboard
        day1 = (DAY0 + timedelta(days=1)).replace(tzinfo=None)
        assert began == day1, path.name
        expected_end = day1 + timedelta(hours=1 if path.name == "engagement.json" else 24)
        assert ended == expected_end, path.name
        assert "is_final" in text
        # a period with only final windows has no annotation (no 1970 region)
        final = expand(target["rawSql"], DAY0, DAY0 + timedelta(hours=23), {"campaign": [ALL]})
        assert dashboard_database.execute(final) == [], path.name


def test_every_panel_has_units_and_roi_below_zero_is_red() -> None:
    build = _builder()
    for path in DASHBOARDS:
        for panel in _load(path)["panels"]:
            defaults = panel["fieldConfig"]["defaults"]
            assert defaults.get("unit"), f"{path.name} / {panel['title']}: no unit"
            for target in panel["targets"]:
                columns = target.get("meta", {}).get("socialroiColumns", [])
                for column in columns:
                    if column not in build.LABEL_COLUMNS:
                        assert column in build.COLUMN_KINDS, f"{panel['title']}: {column}"
    roi = json.loads(build.render()["campaign-roi.json"])
    table, daily = roi["panels"][0], roi["panels"][1]
    assert table["fieldConfig"]["defaults"]["unit"] == "currencyEUR"
    by_column = {
        o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
        for o in table["fieldConfig"]["overrides"]
    }
    assert by_column["roi"]["unit"] == "percentunit"  # -0.98 reads as -98 %
    steps = by_column["roi"]["thresholds"]["steps"]
    assert steps == [{"color": "red", "value": None}, {"color": "green", "value": 0}]
    assert by_column["roi"]["custom.cellOptions"] == {"type": "color-text"}
    assert by_column["provisional_days"]["thresholds"]["steps"][1]["value"] == 1
    assert daily["fieldConfig"]["defaults"]["unit"] == "percentunit"
    shaded = daily["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert shaded[0]["color"].startswith("rgba(242, 73, 92") and shaded[1]["value"] == 0
    # money follows the base currency
    usd = json.loads(build.render("USD")["campaign-roi.json"])
    assert usd["panels"][0]["fieldConfig"]["defaults"]["unit"] == "currencyUSD"
    mxn = json.loads(build.render("MXN")["campaign-roi.json"])
    assert mxn["panels"][0]["fieldConfig"]["defaults"]["unit"] == "suffix: MXN"


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
