"""The reader views (migration 0006) on ClickHouse 18.16 and on chDB, against Python.

The same snapshot set (tests/integration/views_data.py) goes through the real sink into a
chDB store and a fresh database on the 18.16 server; every view is read through its reader
function. Both engines must answer exactly the same, and exactly what views_data.py computes
in plain Python from the newest version of every window (floats compared exactly: each
ratio is one division of exact integer sums, so every engine rounds it the same way).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from clickhouse_driver import Client  # type: ignore[import-untyped]
from pydantic import SecretStr

from pipeline.kpi import KPI_COUNTERS, ratios
from pipeline.settings import ClickHouseSettings
from sinks.backends import Backend, open_backend
from sinks.reader import credited_rows, kpi_rows, skipped_daily
from sinks.views import (
    VIEW_READERS,
    campaign_report,
    campaign_windows,
    campaigns,
    channel_windows,
    follower_growth,
    roi_by_campaign,
    service_savings,
    social_traffic_share,
    spend_vs_return,
)
from sinks.writer import ClickHouseSink
from tests.integration import views_data as data
from tests.integration.conftest_clickhouse import server_url_with_database

pytestmark = pytest.mark.integration

ENGINES = ("chdb", "server")


async def load(backend: Backend, url: str) -> None:
    """Write the snapshot set through the real sink, one insert per few rows (so the
    superseded versions land in different parts, as they would in production)."""
    sink = ClickHouseSink(ClickHouseSettings(url=SecretStr(url)), backend=backend)
    await sink.start()
    snapshots = data.build_snapshots()
    for first in range(0, len(snapshots), 7):
        sink.add_snapshots(snapshots[first : first + 7])
        await sink.flush()
    for record in data.CAMPAIGN_RECORDS:  # one insert each: the newest must win across parts
        sink.add_campaigns([record])
        await sink.flush()
    for credit in data.CREDITS:  # the replayed one in a part of its own
        sink.add_credits([credit])
        await sink.flush()
    for skipped in data.SKIPPED:
        sink.add_skipped_events([skipped])
        await sink.flush()


@pytest.fixture(scope="module")
def stores(
    tmp_path_factory: pytest.TempPathFactory, clickhouse_server_url: str
) -> Iterator[dict[str, Backend]]:
    """Both engines loaded with the snapshot set, for the whole module."""
    database = f"socialroi_test_views_{secrets.token_hex(4)}"
    urls = {
        "chdb": f"chdb://{tmp_path_factory.mktemp('views') / 'chdb'}",
        "server": server_url_with_database(clickhouse_server_url, database),
    }
    backends = {name: open_backend(url) for name, url in urls.items()}
    try:
        for name, backend in backends.items():
            backend.start()
            asyncio.run(load(backend, urls[name]))
        yield backends
    finally:
        for backend in backends.values():
            backend.close()
        parts = urlsplit(clickhouse_server_url)
        client = Client(host=parts.hostname, port=parts.port or 9000)
        try:
            client.execute(f"DROP DATABASE IF EXISTS {database}")
        finally:
            client.disconnect()


@pytest.fixture(scope="module")
def current() -> list[Any]:
    return data.latest(data.build_snapshots())


def both(stores: dict[str, Backend], read: Any, *args: Any, **kwargs: Any) -> list[Any]:
    """The reader's rows, asserted identical on both engines."""
    answers = {name: read(backend, *args, **kwargs) for name, backend in stores.items()}
    assert answers["chdb"] == answers["server"]
    return answers["server"]


def test_the_data_set_has_the_cases_the_views_must_handle(current: list[Any]) -> None:
    written = data.build_snapshots()
    assert len(written) == len(current) + 2  # one window in three versions
    empty = [
        r
        for r in current
        if (r.campaign_id, r.channel, r.window_seconds) == ("tiny", "x", data.DAY_S)
        and r.counters.get("impressions", 0) == 0
    ]
    assert len(empty) == 1
    assert {row["spend_bucket"] for row in data.expected_spend_vs_return(current)} == {
        0,
        1,
        2,
        3,
        4,
    }


def test_campaign_windows(stores: dict[str, Backend], current: list[Any]) -> None:
    rows = both(stores, campaign_windows)
    assert rows == data.expected_campaign_windows(current)
    # The zero-impression window: NULL ratios, a real ROI of -1 (spend, no return).
    empty = next(
        r
        for r in rows
        if r["campaign_id"] == "tiny"
        and r["window_seconds"] == data.DAY_S
        and r["window_kind"] == "tumbling"
        and r["impressions"] == 0
    )
    for name in ("engagement_rate", "ctr", "cpm", "cpc", "cpa", "conversion_rate"):
        assert empty[name] is None, name
    assert empty["roi"] == -1.0 and empty["spend"] == 13.0
    # Filters.
    daily = both(stores, campaign_windows, window_seconds=data.DAY_S, window_kind="tumbling")
    assert daily == [
        r for r in rows if r["window_seconds"] == data.DAY_S and r["window_kind"] == "tumbling"
    ]
    assert both(stores, campaign_windows, campaigns=["tiny"]) == [
        r for r in rows if r["campaign_id"] == "tiny"
    ]


def test_channel_windows_show_only_the_newest_version(
    stores: dict[str, Backend], current: list[Any]
) -> None:
    rows = both(stores, channel_windows)
    assert rows == data.expected_channel_windows(current)
    campaign, channel, kind, seconds, day = data.SUPERSEDED
    (row,) = [
        r
        for r in rows
        if (r["campaign_id"], r["channel"], r["window_kind"], r["window_seconds"])
        == (campaign, channel, kind, seconds)
        and r["window_start_ms"] == data.DAY0_MS + day * seconds * 1000
    ]
    assert row["is_final"] is True
    newest = next(
        s
        for s in data.build_snapshots()
        if (s.campaign_id, s.channel, s.window_seconds, s.window_start_ms, s.version)
        == (campaign, channel, seconds, row["window_start_ms"], 9)
    )
    assert row["likes"] == newest.counters["likes"]


def test_roi_by_campaign_per_day_and_period(stores: dict[str, Backend], current: list[Any]) -> None:
    rows = both(stores, roi_by_campaign)
    assert rows == data.expected_roi_by_campaign(current)
    assert {r["day"] for r in rows} == {"2026-10-01", "2026-10-02", "2026-10-03"}
    second = both(stores, roi_by_campaign, start=date(2026, 10, 2), end=date(2026, 10, 3))
    assert second == [r for r in rows if r["day"] == "2026-10-02"]
    assert both(stores, roi_by_campaign, campaigns=["spring", "free"]) == [
        r for r in rows if r["campaign_id"] in ("spring", "free")
    ]
    free = [r for r in rows if r["campaign_id"] == "free"]
    assert free and all(r["roi"] is None and r["spend"] == 0.0 for r in free)


def test_campaign_directory_has_each_campaigns_newest_record(
    stores: dict[str, Backend],
) -> None:
    assert both(stores, campaigns) == data.expected_campaigns()
    assert both(stores, campaigns, ["SPRING", "none"]) == data.expected_campaigns()[:1]
    spring = [r for r in both(stores, roi_by_campaign) if r["campaign_id"] == "spring"]
    assert spring and {r["campaign_name"] for r in spring} == {"Spring sale"}
    used = sum(r["budget_used"] for r in spring)
    assert used == pytest.approx(sum(r["spend"] for r in spring) / 3_680)


def test_skipped_daily_counts_each_source_position_once(stores: dict[str, Backend]) -> None:
    expected = data.expected_skipped_daily()
    assert both(stores, skipped_daily) == expected
    assert sum(r["late"] for r in expected) == 3 and sum(r["duplicates"] for r in expected) == 2
    second = both(stores, skipped_daily, date(2026, 10, 2), date(2026, 10, 4))
    assert second == [r for r in expected if "2026-10-02" <= r["day"] < "2026-10-04"]
    assert len(second) == 2


def test_spend_vs_return(stores: dict[str, Backend], current: list[Any]) -> None:
    rows = both(stores, spend_vs_return)
    assert rows == data.expected_spend_vs_return(current)
    # 'free' is in the "no spend" bucket; campaign '' (direct traffic) is no campaign.
    assert rows[0]["spend_bucket_label"] == "no spend" and rows[0]["campaigns"] == 1
    assert rows[0]["roi"] is None


def test_social_traffic_share(stores: dict[str, Backend], current: list[Any]) -> None:
    rows = both(stores, social_traffic_share)
    assert rows == data.expected_social_traffic_share(current)
    for row in rows:
        assert 0 < row["social_share"] < 1
        assert row["direct_visits"] > 0 and row["other_visits"] > 0  # email: not social
    assert [r["is_final"] for r in rows] == [True, True, False]


def test_follower_growth_cumulates_from_the_first_day_whatever_the_filter(
    stores: dict[str, Backend], current: list[Any]
) -> None:
    rows = both(stores, follower_growth)
    assert rows == data.expected_follower_growth(current)
    later = both(stores, follower_growth, start=date(2026, 10, 2), campaigns=["summer"])
    assert later == [r for r in rows if r["campaign_id"] == "summer" and r["day"] >= "2026-10-02"]


def test_service_savings(stores: dict[str, Backend], current: list[Any]) -> None:
    rows = both(stores, service_savings)
    assert rows == data.expected_service_savings(current)
    assert sum(r["service_savings"] for r in rows) > 0


def test_campaign_report_totals_a_period_from_summed_inputs(
    stores: dict[str, Backend], current: list[Any]
) -> None:
    start, end = date(2026, 10, 1), date(2026, 10, 4)
    rows = both(stores, campaign_report, start=start, end=end)
    assert rows == data.expected_report(current, start, end)
    hourly = both(stores, campaign_report, window_seconds=3600, start=start, end=end)
    assert hourly == data.expected_report(current, start, end, seconds=3600)
    # One day's report equals that day's roi_by_campaign row (the view's numbers).
    one = both(stores, campaign_report, start=date(2026, 10, 2), end=date(2026, 10, 3))
    day = {r["campaign_id"]: r for r in both(stores, roi_by_campaign, start=date(2026, 10, 2))}
    for row in one:
        view = day[row["campaign_id"]]
        if view["day"] != "2026-10-02":
            continue
        for name in ("spend", "revenue", "profit", "service_savings", "roi", "roas", "cpa"):
            assert row[name] == view[name], name
    by_roi = both(stores, campaign_report, start=start, end=end, sort="roi", descending=True)
    ranked = [r["roi"] for r in by_roi if r["roi"] is not None]
    assert ranked == sorted(ranked, reverse=True)
    assert by_roi[-1]["roi"] is None  # NULLs last


def test_view_column_types_are_the_same_on_both_engines(stores: dict[str, Backend]) -> None:
    types = {}
    for name, backend in stores.items():
        result = backend.query(
            "SELECT table, name, type FROM system.columns WHERE database = currentDatabase() "
            f"AND table IN ({', '.join(repr(v) for v in VIEW_READERS)}) ORDER BY table, name"
        )
        types[name] = {(t, c): ty for t, c, ty in result.rows}
    assert types["chdb"] == types["server"]
    for (table, column), type_name in types["server"].items():
        if column in ("roi", "ctr", "cpa", "social_share", "value_per_follower"):
            assert type_name == "Nullable(Float64)", (table, column)
        if column in ("spend", "revenue", "service_savings"):
            assert type_name == "Float64", (table, column)


def test_every_view_reader_is_exercised_here() -> None:
    source = Path(__file__).read_text()
    for view, reader in VIEW_READERS.items():
        assert f"stores, {reader.__name__}" in source, view


def test_view_ratios_equal_the_pure_core_formulas(stores: dict[str, Backend]) -> None:
    """Two implementations of the catalogue agree: the SQL views and pipeline.kpi.ratios."""
    checked = 0
    for backend in stores.values():
        for row in campaign_windows(backend):
            current = [
                r
                for r in kpi_rows(backend, campaign=row["campaign_id"])
                if r["window_kind"] == row["window_kind"]
                and r["window_seconds"] == row["window_seconds"]
                and r["window_start_ms"] == row["window_start_ms"]
            ]
            summed = {n: sum(int(r[n]) for r in current) for n in KPI_COUNTERS}
            for name, value in ratios(summed).items():
                if name not in row:
                    continue
                if value is None:
                    assert row[name] is None, (name, row)
                else:
                    assert row[name] == pytest.approx(value, rel=1e-12), (name, row)
                checked += 1
    assert checked > 100


def test_credited_conversions_under_the_declared_campaign_with_its_margin(
    stores: dict[str, Backend],
) -> None:
    rows = both(stores, credited_rows)
    assert rows == data.expected_credits()
    by_conversion = {r["conversion_event_id"]: r for r in rows}
    # the tag's credit counts for spring, with spring's declared 30% margin
    assert by_conversion["c-2"]["campaign_id"] == "spring"
    assert by_conversion["c-2"]["profit_micros"] == 300_002
    assert by_conversion["c-1"]["profit_micros"] == 500_000  # its own margin stays
    assert by_conversion["c-3"]["profit_micros"] == 0  # summer declares no margin
    assert by_conversion["c-4"]["campaign_id"] == "nobody"
    assert by_conversion["c-5"]["campaign_id"] == "spring"
