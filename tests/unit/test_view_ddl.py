"""The generator of a KPI migration (``socialroi migrate --new``) and the rule that the
migrations follow the catalogue: a counter or a ratio added to pipeline/kpi.py without its
migration fails here, with the command that writes it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.kpi import KPI_COUNTERS
from sinks.errors import MigrationError
from sinks.migrate import (
    MIGRATIONS_DIR,
    cluster_ddl,
    lint_migration,
    load_migrations,
    split_statements,
)
from sinks.view_ddl import (
    GENERATED_VIEWS,
    kpi_pane_columns,
    view_statements,
    write_new_migration,
)
from sinks.views import RATIO_EXPRESSIONS

HOW = "the migrations lag the KPI catalogue: run `socialroi migrate --new NAME`"


def generated(counters: tuple[str, ...] = KPI_COUNTERS) -> dict[str, str]:
    """The generated views as the migrator reads them (whole-line comments dropped)."""
    return {v: split_statements(f"{sql};")[0] for v, sql in view_statements(counters).items()}


def newest_definitions() -> dict[str, str]:
    newest = {}
    for migration in load_migrations():
        for statement in migration.statements:
            for view in GENERATED_VIEWS:
                if statement.startswith(f"CREATE VIEW IF NOT EXISTS {view} AS"):
                    newest[view] = statement
    return newest


def test_kpi_panes_has_a_column_for_every_counter() -> None:
    columns = kpi_pane_columns(load_migrations())
    assert [c for c in KPI_COUNTERS if c not in columns] == [], HOW


def test_the_newest_views_are_the_ones_the_catalogue_generates() -> None:
    assert newest_definitions() == generated(), HOW


def test_the_generator_writes_the_views_migration_0010_wrote_by_hand() -> None:
    # the same SQL for the counters of 0010, so the generator inherits what 0010 was tested
    # for (composition of hopping windows, campaign records, declared margins)
    counters = KPI_COUNTERS[: KPI_COUNTERS.index("unmargined_revenue_micros") + 1]
    (campaigns,) = [m for m in load_migrations() if m.name == "campaigns"]
    for view in ("kpi_pane_latest", "kpi_key_current", "kpi_current"):
        (written,) = [
            s for s in campaigns.statements if s.startswith(f"CREATE VIEW IF NOT EXISTS {view} ")
        ]
        assert written == generated(counters)[view], view


def test_a_new_counter_gets_its_column_and_its_views(tmp_path: Path) -> None:
    for path in MIGRATIONS_DIR.glob("*.sql"):
        shutil.copy(path, tmp_path / path.name)
    with pytest.raises(MigrationError, match="already match the KPI catalogue"):
        write_new_migration("nothing_new", tmp_path)
    with pytest.raises(MigrationError, match="lower case letters"):
        write_new_migration("Bad-Name", tmp_path)

    # the schema as it was before migration 0010 added unmargined_revenue_micros
    for path in tmp_path.glob("*.sql"):
        if int(path.name[:4]) >= 10:
            path.unlink()
    path = write_new_migration("again", tmp_path)
    assert path.name == "0010_again.sql"
    migration = load_migrations(tmp_path)[-1]
    assert lint_migration(migration) == []
    missing = [c for c in KPI_COUNTERS if c not in kpi_pane_columns(load_migrations(tmp_path)[:-1])]
    assert "unmargined_revenue_micros" in missing
    assert [s for s in migration.statements if s.startswith("ALTER")] == [
        f"ALTER TABLE kpi_panes ADD COLUMN IF NOT EXISTS {c} Int64 DEFAULT 0" for c in missing
    ]
    drops = [s for s in migration.statements if s.startswith("DROP TABLE IF EXISTS")]
    assert drops == [f"DROP TABLE IF EXISTS {view}" for view in GENERATED_VIEWS]
    for view in ("kpi_campaign_windows", "kpi_channel_windows"):
        (create,) = [s for s in migration.statements if f"EXISTS {view} AS" in s]
        for name, expression in RATIO_EXPRESSIONS.items():
            assert f"{expression} AS {name}" in create, (view, name)
    assert kpi_pane_columns(load_migrations(tmp_path))[-len(missing) :] == missing


def test_generated_views_read_their_database_on_a_cluster() -> None:
    objects = {"kpi_panes", "kpi_watermarks", "campaign_keys", "campaign_directory"}
    objects |= set(GENERATED_VIEWS)
    for view, statement in generated().items():
        (created,) = cluster_ddl(statement, "c1", "db", objects)
        assert created.startswith(f"CREATE VIEW IF NOT EXISTS db.{view} ON CLUSTER c1 AS")
        assert " FROM kpi_" not in created and " FROM campaign_" not in created, view
