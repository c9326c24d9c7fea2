"""The migration files and the migrator: numbering, idempotent DDL, frozen releases, gates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.kpi import KPI_COUNTERS
from sinks.backends import QueryResult
from sinks.errors import MigrationError, QueryError
from sinks.memory import MemoryBackend
from sinks.migrate import (
    ACCESS_MANAGEMENT_PROBE,
    MIGRATIONS_DIR,
    RELEASED_FILE,
    Migration,
    apply_migrations,
    check_released,
    cluster_ddl,
    lint_migration,
    load_migrations,
    lock_lines,
    split_statements,
    version_allows,
)
from sinks.tables import DEAD_LETTER_COLUMNS, KPI_COLUMNS

CREATE_T = "CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = MergeTree ORDER BY a;\n"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def table_columns(table: str) -> dict[str, str]:
    """Column name -> type of ``table`` as created and altered by the migration files
    (parsed SQL; a column added with ``ADD COLUMN IF NOT EXISTS`` comes last, without its
    DEFAULT)."""
    columns: dict[str, str] = {}
    created = False
    for migration in load_migrations():
        for statement in migration.statements:
            match = re.match(
                rf"CREATE TABLE IF NOT EXISTS {table}\s*\((.*)\)\s*ENGINE", statement, re.S
            )
            if match:
                created = True
                for line in match.group(1).splitlines():
                    line = line.strip().rstrip(",")
                    if line:
                        name, type_name = line.split(None, 1)
                        columns[name] = type_name
            added = re.match(
                rf"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS (\w+) (\S+)", statement
            )
            if added:
                columns[added[1]] = added[2]
    if not created:
        raise AssertionError(f"no migration creates {table}")
    return columns


# --- the real migration files -------------------------------------------------------------


def test_the_migrations_load_in_order() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert all(m.statements for m in migrations)


def test_every_statement_is_idempotent() -> None:
    problems = [problem for m in load_migrations() for problem in lint_migration(m)]
    assert problems == []


def test_released_migrations_are_unchanged() -> None:
    assert check_released() == []


def test_every_migration_is_released_or_newer_than_the_last_release() -> None:
    lock = (MIGRATIONS_DIR / RELEASED_FILE).read_text().splitlines()
    released = [int(line.split()[0]) for line in lock if line and not line.startswith("#")]
    assert released == list(range(1, len(released) + 1))


def test_kpi_panes_has_exactly_the_kpi_counters_and_the_sketch() -> None:
    columns = table_columns("kpi_panes")
    fixed = {"campaign_id", "channel", "window_kind", "window_seconds", "window_start"}
    fixed |= {"window_end", "is_final", "version", "updated_at"}
    sketch = {"hopping_seconds": "Array(UInt32)", "reach_users": "Array(UInt64)"}
    sketch["reach_codes"] = "Array(UInt32)"
    counters = set(columns) - fixed - set(sketch)
    assert counters == set(KPI_COUNTERS)
    assert all(columns[name] == "Int64" for name in KPI_COUNTERS)
    assert all(columns[name] == kind for name, kind in sketch.items())
    # the writer names its columns; those later migrations added come last in the table
    order = tuple(columns)
    added = order[order.index("updated_at") + 1 :]
    assert "unmargined_revenue_micros" in added
    assert order == (*(c for c in KPI_COLUMNS if c not in added), *added)


def test_kpi_current_reads_every_counter_of_the_newest_pane_row() -> None:
    statements = [s for m in load_migrations() for s in m.statements]
    panes = [s for s in statements if "VIEW IF NOT EXISTS kpi_pane_latest" in s][-1]
    for name in KPI_COUNTERS:
        assert f"argMax({name}, version) AS {name}" in panes, name
    by_key = [s for s in statements if "VIEW IF NOT EXISTS kpi_key_current" in s][-1]
    assert "FROM kpi_pane_latest" in by_key
    for name in KPI_COUNTERS:
        assert re.search(rf"^\s+{name},$", by_key, re.MULTILINE), name
    current = [s for s in statements if "VIEW IF NOT EXISTS kpi_current" in s][-1]
    assert "FROM kpi_key_current" in current
    for name in KPI_COUNTERS:
        assert re.search(rf"\) AS {name},$", current, re.MULTILINE), name
    for view in (panes, by_key, current):
        assert re.search(r"\bFINAL\b", view, re.IGNORECASE) is None


def test_dead_letters_columns_match_the_writer() -> None:
    assert tuple(table_columns("dead_letters")) == DEAD_LETTER_COLUMNS


def test_no_migration_uses_types_missing_from_clickhouse_18_16() -> None:
    newer = re.compile(r"\b(DateTime64|LowCardinality|Map|JSON|Object|UUID|IPv[46]|Bool)\b")
    offenders = [
        f"{m.path.name}: {match.group(0)}"
        for m in load_migrations()
        if m.requires is None
        for statement in m.statements
        for match in [newer.search(statement)]
        if match
    ]
    assert offenders == []


# --- loading rules, on files written by the test -----------------------------------------


def test_cluster_ddl_replicates_every_table_behind_a_distributed_one() -> None:
    statements = [s for m in load_migrations() for s in m.statements]
    tables = [s for s in statements if s.lstrip().startswith("CREATE TABLE")]
    views = [s for s in statements if s.lstrip().startswith("CREATE VIEW")]
    assert tables and views
    for statement in tables:
        name = re.search(r"EXISTS (\w+)", statement).group(1)  # type: ignore[union-attr]
        local, front = cluster_ddl(statement, "c1", "db")
        engine = re.search(r"ENGINE = (\w+)", statement).group(1)  # type: ignore[union-attr]
        assert local.startswith(f"CREATE TABLE IF NOT EXISTS db.{name}_local ON CLUSTER c1 (")
        path = f"'/clickhouse/tables/{{shard}}/db/{name}_local', '{{replica}}'"
        assert f"ENGINE = Replicated{engine}({path}" in local
        assert local.split("ENGINE", 1)[0].count(",") == statement.split("ENGINE", 1)[0].count(",")
        sort_key = re.search(r"ORDER BY \((.*)\)", statement).group(1)  # type: ignore[union-attr]
        assert front == (
            f"CREATE TABLE IF NOT EXISTS db.{name} ON CLUSTER c1 AS db.{name}_local\n"
            f"ENGINE = Distributed(c1, db, {name}_local, cityHash64({sort_key}))"
        )
    kpi = next(s for s in tables if "kpi_panes" in s)
    assert (
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/kpi_panes_local', "
        "'{replica}', version)" in cluster_ddl(kpi, "c1", "db")[0]
    )
    objects = {re.search(r"EXISTS (\w+)", s).group(1) for s in tables + views}  # type: ignore[union-attr]
    for statement in views:
        (created,) = cluster_ddl(statement, "c1", "db", objects)
        assert re.match(r"CREATE VIEW IF NOT EXISTS db\.\w+ ON CLUSTER c1 AS\s+SELECT", created)
        # every read of our own tables names the database: ON CLUSTER runs in "default"
        assert re.findall(r"FROM (\w+)\b(?!\.)", created) == []
        assert re.findall(r"FROM db\.(\w+)", created)
    drops = [s for s in statements if s.lstrip().startswith("DROP")]
    assert cluster_ddl(drops[0], "c1", "db") == [
        "DROP TABLE IF EXISTS db.kpi_current ON CLUSTER c1"
    ]
    for drop in drops:  # migrations drop only views, to define them anew
        (name,) = re.findall(r"DROP TABLE IF EXISTS (\w+)$", drop)
        assert f"CREATE VIEW IF NOT EXISTS {name} AS" in "\n".join(views)
    grant = "GRANT SELECT ON * TO socialroi_reader_role"
    assert cluster_ddl(grant, "c1", "db") == [grant]


def test_rejects_duplicate_numbers(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.sql", CREATE_T)
    write(tmp_path, "0001_b.sql", CREATE_T)
    with pytest.raises(MigrationError, match="already used"):
        load_migrations(tmp_path)


def test_rejects_gaps(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.sql", CREATE_T)
    write(tmp_path, "0003_c.sql", CREATE_T)
    with pytest.raises(MigrationError, match="expected migration 0002"):
        load_migrations(tmp_path)


def test_rejects_numbering_that_does_not_start_at_one(tmp_path: Path) -> None:
    write(tmp_path, "0002_b.sql", CREATE_T)
    with pytest.raises(MigrationError, match="expected migration 0001"):
        load_migrations(tmp_path)


@pytest.mark.parametrize("name", ["1_short.sql", "0001-dash.sql", "0001_Upper.sql"])
def test_rejects_misnamed_files(tmp_path: Path, name: str) -> None:
    write(tmp_path, name, CREATE_T)
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        load_migrations(tmp_path)


def test_rejects_an_unterminated_statement(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.sql", CREATE_T + "CREATE TABLE IF NOT EXISTS u (a UInt8)\n")
    with pytest.raises(MigrationError, match=r"0001_a\.sql: statement not terminated"):
        load_migrations(tmp_path)


@pytest.mark.parametrize(
    ("statement", "problem"),
    [
        ("CREATE TABLE t (a UInt8) ENGINE = Memory", "CREATE TABLE without IF NOT EXISTS"),
        ("create view v as select 1", "CREATE VIEW without IF NOT EXISTS"),
        ("CREATE MATERIALIZED VIEW mv TO t AS SELECT 1", "CREATE VIEW without IF NOT EXISTS"),
        ("CREATE DATABASE d", "CREATE DATABASE without IF NOT EXISTS"),
        ("CREATE ROW POLICY p ON t USING 1 TO ALL", "CREATE ROW POLICY without IF NOT EXISTS"),
        ("CREATE OR REPLACE VIEW v AS SELECT 1", "CREATE OR REPLACE is not idempotent"),
        ("DROP TABLE t", "DROP without IF EXISTS"),
        ("ALTER TABLE t ADD COLUMN b UInt8", "ALTER ADD/DROP without IF [NOT] EXISTS"),
        ("ALTER TABLE t DROP COLUMN b", "ALTER ADD/DROP without IF [NOT] EXISTS"),
        ("SELECT 1; SELECT 2", "';' inside a statement"),
    ],
)
def test_lint_finds_non_idempotent_ddl(tmp_path: Path, statement: str, problem: str) -> None:
    write(tmp_path, "0001_a.sql", statement + ";\n")
    (migration,) = load_migrations(tmp_path)
    problems = lint_migration(migration)
    assert len(problems) == 1 and problem in problems[0]


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = Memory",
        "CREATE VIEW IF NOT EXISTS v AS SELECT 1",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS mv TO t AS SELECT 1",
        "DROP VIEW IF EXISTS v",
        "CREATE ROW POLICY IF NOT EXISTS p ON system.processes USING user = currentUser() TO r",
        "ALTER TABLE t ADD COLUMN IF NOT EXISTS b UInt8, DROP COLUMN IF EXISTS c",
    ],
)
def test_lint_accepts_idempotent_ddl(tmp_path: Path, statement: str) -> None:
    write(tmp_path, "0001_a.sql", statement + ";\n")
    (migration,) = load_migrations(tmp_path)
    assert lint_migration(migration) == []


def test_released_check_catches_an_edit_and_a_deletion(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.sql", CREATE_T)
    write(tmp_path, "0002_b.sql", CREATE_T.replace(" t ", " u "))
    lines = lock_lines(load_migrations(tmp_path))
    write(tmp_path, RELEASED_FILE, "# header\n" + "\n".join(lines) + "\n")
    assert check_released(tmp_path) == []

    write(tmp_path, "0001_a.sql", CREATE_T.replace("UInt8", "UInt16"))
    assert check_released(tmp_path) == [
        "0001_a.sql was edited after its release; add a new migration instead"
    ]

    write(tmp_path, "0001_a.sql", CREATE_T)
    write(tmp_path, RELEASED_FILE, "\n".join([*lines, "0003 " + "0" * 64]) + "\n")
    assert check_released(tmp_path) == ["released migration 0003 was deleted"]


def test_unreleased_migrations_may_still_change(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.sql", CREATE_T)
    write(tmp_path, RELEASED_FILE, "\n".join(lock_lines(load_migrations(tmp_path))) + "\n")
    write(tmp_path, "0002_b.sql", CREATE_T.replace(" t ", " u "))
    assert check_released(tmp_path) == []


# --- statement splitting -----------------------------------------------------------------


def test_split_statements() -> None:
    sql = """-- requires: 20.1
-- a comment
CREATE TABLE IF NOT EXISTS t
(
    a UInt8 -- trailing comments inside a statement stay
)
ENGINE = Memory;

  -- indented comment
CREATE VIEW IF NOT EXISTS v AS SELECT a FROM t  ;
"""
    assert split_statements(sql) == [
        "CREATE TABLE IF NOT EXISTS t\n(\n    a UInt8 -- trailing comments inside a statement"
        " stay\n)\nENGINE = Memory",
        "CREATE VIEW IF NOT EXISTS v AS SELECT a FROM t",
    ]


def test_split_statements_of_nothing() -> None:
    assert split_statements("-- only a comment\n\n") == []
    assert split_statements(";\n") == []


def test_split_statements_keeps_a_mid_line_semicolon_for_the_lint() -> None:
    assert split_statements("SELECT 1; SELECT 2;\n") == ["SELECT 1; SELECT 2"]


# --- the version gate ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "required", "allowed"),
    [
        ((18, 16, 1), None, True),
        ((18, 16, 1), (20, 1), False),
        ((20, 1), (20, 1), True),
        ((20, 1, 0, 0), (20, 1), True),
        ((20,), (20, 1), False),
        ((19, 12, 3), (19, 6), True),
        ((26, 9, 2, 1), (20, 1), True),
        ((20, 0, 99), (20, 1), False),
    ],
)
def test_version_allows(
    server: tuple[int, ...], required: tuple[int, ...] | None, allowed: bool
) -> None:
    assert version_allows(server, required) is allowed


def test_requires_header_is_parsed_only_before_the_first_statement(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.sql", "-- adds TTL\n--requires: 19.6.2\n" + CREATE_T)
    write(tmp_path, "0002_b.sql", CREATE_T + "-- requires: 20.1\n")
    first, second = load_migrations(tmp_path)
    assert first.requires == (19, 6, 2)
    assert second.requires is None


def gated_dir(tmp_path: Path) -> Path:
    write(tmp_path, "0001_base.sql", CREATE_T)
    write(
        tmp_path, "0002_newer.sql", "-- requires: 20.1\nCREATE VIEW IF NOT EXISTS v AS SELECT 1;\n"
    )
    write(tmp_path, "0003_plain.sql", CREATE_T.replace(" t ", " u "))
    return tmp_path


def names(migrations: list[Migration]) -> list[str]:
    return [m.name for m in migrations]


def test_gated_migration_waits_for_a_new_enough_engine(tmp_path: Path) -> None:
    directory = gated_dir(tmp_path)
    backend = MemoryBackend(version=(18, 16, 1))
    backend.start()
    assert names(apply_migrations(backend, directory)) == ["base", "plain"]
    assert not any("VIEW" in sql for sql in backend.executed)
    assert names(apply_migrations(backend, directory)) == []

    backend.version = (20, 3, 1)  # the server was upgraded
    assert names(apply_migrations(backend, directory)) == ["newer"]
    recorded = sorted(row["version"] for row in backend.tables["schema_migrations"])
    assert recorded == [1, 2, 3]


# --- applying -----------------------------------------------------------------------------


def test_apply_records_each_migration_once(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.sql", CREATE_T + CREATE_T.replace(" t ", " u "))
    backend = MemoryBackend()
    backend.start()
    (applied,) = apply_migrations(backend, tmp_path)
    assert applied.version == 1
    assert [sql.split(" (")[0] for sql in backend.executed[1:]] == [
        "CREATE TABLE IF NOT EXISTS t",
        "CREATE TABLE IF NOT EXISTS u",
    ]
    (record,) = backend.tables["schema_migrations"]
    assert (record["version"], record["name"], record["checksum"]) == (1, "a", applied.checksum)
    assert apply_migrations(backend, tmp_path) == []


def test_apply_refuses_a_migration_applied_with_other_content(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.sql", CREATE_T)
    backend = MemoryBackend()
    backend.start()
    apply_migrations(backend, tmp_path)
    write(tmp_path, "0001_a.sql", CREATE_T.replace("UInt8", "UInt16"))
    with pytest.raises(MigrationError, match="checksum mismatch"):
        apply_migrations(backend, tmp_path)


def test_double_records_from_concurrent_starts_are_harmless(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.sql", CREATE_T)
    backend = MemoryBackend()
    backend.start()
    (migration,) = apply_migrations(backend, tmp_path)
    backend.tables["schema_migrations"].append(dict(backend.tables["schema_migrations"][0]))
    assert apply_migrations(backend, tmp_path) == []
    assert migration.version == 1


def test_a_failing_statement_leaves_the_migration_unrecorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "0001_a.sql", CREATE_T)
    write(tmp_path, "0002_b.sql", CREATE_T.replace(" t ", " u "))
    backend = MemoryBackend()
    backend.start()
    execute = backend.execute

    def failing_on_u(sql: str) -> None:
        if "EXISTS u " in sql:
            raise MigrationError("boom")
        execute(sql)

    monkeypatch.setattr(backend, "execute", failing_on_u)
    with pytest.raises(MigrationError, match="boom"):
        apply_migrations(backend, tmp_path)
    assert [row["version"] for row in backend.tables["schema_migrations"]] == [1]
    monkeypatch.setattr(backend, "execute", execute)
    assert names(apply_migrations(backend, tmp_path)) == ["b"]


# --- capability gates and least-privilege users -------------------------------------------

ROLES = (
    "-- requires: 20.5\n-- requires: access_management\n"
    "CREATE ROLE IF NOT EXISTS r;\nGRANT SELECT ON * TO r;\n"
)


def test_access_management_migration_is_skipped_where_access_cannot_be_managed(
    tmp_path: Path,
) -> None:
    write(tmp_path, "0001_base.sql", CREATE_T)
    write(tmp_path, "0002_roles.sql", ROLES)
    (roles,) = [m for m in load_migrations(tmp_path) if m.name == "roles"]
    assert roles.requires == (20, 5) and roles.capabilities == frozenset({"access_management"})
    backend = MemoryBackend(version=(26, 9))  # new enough, but no access management
    backend.start()
    assert names(apply_migrations(backend, tmp_path)) == ["base"]
    assert not any("ROLE" in sql for sql in backend.executed)

    def manages_access(sql: str) -> QueryResult:
        assert sql == ACCESS_MANAGEMENT_PROBE
        return QueryResult(("count()",), [(0,)])

    capable = MemoryBackend(version=(26, 9), responder=manages_access)
    capable.start()
    original = capable.query
    capable.query = lambda sql: (  # type: ignore[method-assign]
        manages_access(sql) if sql == ACCESS_MANAGEMENT_PROBE else original(sql)
    )
    assert names(apply_migrations(capable, tmp_path)) == ["base", "roles"]
    assert "CREATE ROLE IF NOT EXISTS r" in capable.executed


def test_unknown_requirement_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.sql", "-- requires: time_travel\n" + CREATE_T)
    with pytest.raises(MigrationError, match="unknown requirement 'time_travel'"):
        load_migrations(tmp_path)


def test_lint_accepts_idempotent_access_ddl(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.sql", ROLES + "CREATE ROLE r2;\n")
    (migration,) = load_migrations(tmp_path)
    assert lint_migration(migration) == [
        "0001_a.sql statement 3: CREATE ROLE without IF NOT EXISTS"
    ]


def test_a_user_without_ddl_rights_starts_once_everything_is_applied(tmp_path: Path) -> None:
    write(tmp_path, "0001_a.sql", CREATE_T)
    backend = MemoryBackend()
    backend.start()
    apply_migrations(backend, tmp_path)
    refused = QueryError("DDL queries are prohibited for the user", 392)
    backend.fail_next(refused)
    assert apply_migrations(backend, tmp_path) == []

    write(tmp_path, "0002_b.sql", CREATE_T.replace(" t ", " u "))
    backend.fail_next(refused)
    with pytest.raises(MigrationError, match=r"0002_b\.sql is not applied .* as an admin"):
        apply_migrations(backend, tmp_path)
