"""Every migration applied to an empty store gives the tables the writer names and the
window views the KPI catalogue lists: checked with ``DESCRIBE`` on chDB, the 18.16 server
and the server as a cluster (replicated local tables behind Distributed ones)."""

from __future__ import annotations

from pipeline.kpi import CATALOGUE, KPI_COUNTERS
from sinks.backends import Backend
from sinks.migrate import LOCAL_SUFFIX, apply_migrations
from sinks.tables import KPI_TABLE, WRITTEN_COLUMNS


def describe(backend: Backend, table: str) -> dict[str, str]:
    """Column name -> type, in table order."""
    result = backend.query(f"DESCRIBE TABLE {table}")
    return {str(row[0]): str(row[1]) for row in result.rows}


def window_view_columns(reach: str) -> set[str]:
    return {reach if k.name == "reach" else k.column for k in CATALOGUE if not k.internal}


def test_every_written_table_has_exactly_the_writers_columns(engine_backend: Backend) -> None:
    apply_migrations(engine_backend)
    tables = [*WRITTEN_COLUMNS]
    if engine_backend.cluster:  # the data is in the local tables
        tables += [f"{table}{LOCAL_SUFFIX}" for table in WRITTEN_COLUMNS]
    for table in tables:
        columns = describe(engine_backend, table)
        written = WRITTEN_COLUMNS[table.removesuffix(LOCAL_SUFFIX)]
        assert sorted(columns) == sorted(written), table
    for table in (KPI_TABLE, f"{KPI_TABLE}{LOCAL_SUFFIX}")[: 2 if engine_backend.cluster else 1]:
        columns = describe(engine_backend, table)
        assert {name: columns[name] for name in KPI_COUNTERS} == dict.fromkeys(
            KPI_COUNTERS, "Int64"
        ), table


def test_the_window_views_show_every_kpi_of_the_catalogue(engine_backend: Backend) -> None:
    apply_migrations(engine_backend)
    campaign = describe(engine_backend, "kpi_campaign_windows")
    channel = describe(engine_backend, "kpi_channel_windows")
    assert window_view_columns("reach_sum") <= set(campaign)
    assert window_view_columns("reach") <= set(channel)
    current = describe(engine_backend, "kpi_current")
    assert set(KPI_COUNTERS) <= set(current)
