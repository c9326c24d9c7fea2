"""Numbered, append-only SQL migrations, the same files for every engine.

Files are ``sinks/migrations/NNNN_name.sql``: numbered from 0001 without gaps, applied in order,
recorded in ``schema_migrations`` (version, name, sha256 checksum, applied_at). Statements in a
file are separated by a ``;`` that ends a line; whole-line ``--`` comments are dropped. A
header line ``-- requires: 20.1`` applies the file only on engines of that version or newer
(it is skipped, not recorded, on older ones, and applied once the engine is upgraded). A
header line ``-- requires: access_management`` applies it only where the migrating user can
manage SQL users and roles (not chDB, not a server user without ``access_management``);
otherwise it is skipped the same way, with a log line saying an admin should apply it. A
later migration must not depend on a gated one.

On a cluster (a store URL with ``?cluster=NAME``) every statement goes through
:func:`cluster_ddl`: a table becomes a ReplicatedReplacingMergeTree ``<name>_local`` on every
server plus a Distributed ``<name>`` in front of it, sharded by a hash of its sort key (so
all versions of a row meet on one shard, where ReplacingMergeTree collapses them; the views'
``argMax`` works across shards anyway); views and the database are created ``ON CLUSTER``.
Readers and writers keep using the plain names. Other statements (roles, grants) run on
the server the migration connects to only.

A user without DDL rights (the least-privilege ingest user) may call
:func:`apply_migrations` once an admin has applied every migration: it then runs no DDL.

Safety:

* Re-running is harmless: recorded versions are skipped, and every DDL statement is
  idempotent (``IF NOT EXISTS``, enforced by :func:`lint_migration` and the unit tests), so
  several workers starting at once may apply the same file concurrently; the duplicate
  record rows collapse (``ReplacingMergeTree``) and are read with ``GROUP BY``.
* A file edited after it was applied is refused: its checksum no longer matches the record.
* ``released.txt`` holds the checksums of released migrations; tests refuse an edit to one.
  ``python -m sinks.migrate --lock`` prints the lines for the current files.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from sinks.backends import Backend, sql_string
from sinks.errors import MigrationError, QueryError

__all__ = [
    "LOCAL_SUFFIX",
    "MIGRATIONS_DIR",
    "RELEASED_FILE",
    "Migration",
    "add_column_ddl",
    "apply_migrations",
    "check_released",
    "cluster_ddl",
    "lint_migration",
    "load_migrations",
    "lock_lines",
    "split_statements",
    "version_allows",
]

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
RELEASED_FILE = "released.txt"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_REQUIRES = re.compile(r"^--\s*requires:\s*(\d+(?:\.\d+)*)\s*$", re.IGNORECASE)
_REQUIRES_CAPABILITY = re.compile(r"^--\s*requires:\s*([a-z_]+)\s*$", re.IGNORECASE)
CAPABILITIES = frozenset({"access_management"})
# Succeeds only for a user that may see SQL users and roles (ClickHouse >= 20.5 with
# access_management); chDB and 18.16 refuse it.
ACCESS_MANAGEMENT_PROBE = "SELECT count() FROM system.roles"

_SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version UInt32,
    name String,
    checksum String,
    applied_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version
"""


LOCAL_SUFFIX = "_local"
_CREATE_TABLE = re.compile(
    r"^\s*CREATE TABLE IF NOT EXISTS (\w+)\s*(\(.*\))\s*ENGINE\s*=\s*(\w+)(?:\((.*?)\))?\s+(.*)$",
    re.DOTALL,
)
_CREATE_VIEW = re.compile(r"^\s*CREATE VIEW IF NOT EXISTS (\w+) AS\b(.*)$", re.DOTALL)
_CREATED = re.compile(r"^\s*CREATE (?:TABLE|VIEW) IF NOT EXISTS (\w+)", re.MULTILINE)
_UNKNOWN_TABLE = 60
# Also met while a concurrent migrator drops and creates a table anew: the table is being
# dropped (218), its metadata is gone but not yet its name (390); and, on 18.16, while one
# adds a column a view reads: system.columns lists it before a query can name it (47).
_GAP_CODES = frozenset({_UNKNOWN_TABLE, 218, 390, 47})
_VIEW_GAP_ATTEMPTS = 25
_DROP_IF_EXISTS = re.compile(r"^\s*DROP TABLE IF EXISTS (\w+)\s*$")
_READS = re.compile(r"\b(FROM|JOIN)\s+(\w+)\b(?!\.)", re.IGNORECASE)
_SORT_KEY = re.compile(r"ORDER BY\s*(?:\(([^)]*)\)|(\w+))")


def add_column_ddl(statement: str, database: str, cluster: str | None) -> tuple[str, str] | None:
    """For ``ALTER TABLE t ADD COLUMN IF NOT EXISTS c <type ...>``: (table, column) with
    ``table`` the one that holds the data (``<t>_local`` on a cluster); ``None`` for any
    other statement. See :func:`apply_migrations` for how it is applied."""
    match = _ADD_COLUMN.match(statement)
    if match is None:
        return None
    table, column, _ = match.groups()
    return (f"{table}{LOCAL_SUFFIX}" if cluster else table), column


def _plain_add_column(statement: str, table: str, on_cluster: str) -> str:
    match = _ADD_COLUMN.match(statement)
    assert match is not None
    return f"ALTER TABLE {table}{on_cluster} ADD COLUMN {match[2]} {match[3]}"


def cluster_ddl(
    statement: str, cluster: str, database: str, objects: Collection[str] = ()
) -> list[str]:
    """The statements that give ``statement``'s effect on every server of ``cluster``.

    A view's reads of ``objects`` (the tables and views migrations create) are qualified
    with ``database``: each server runs ``ON CLUSTER`` DDL in its default database.
    """
    table = _CREATE_TABLE.match(statement)
    if table:
        name, columns, engine, args, rest = table.groups()
        sort_key = _SORT_KEY.search(rest)
        if sort_key is None:
            raise MigrationError(f"table {name}: no ORDER BY to shard by")
        local = f"{database}.{name}{LOCAL_SUFFIX}"
        path = f"'/clickhouse/tables/{{shard}}/{database}/{name}{LOCAL_SUFFIX}', '{{replica}}'"
        replicated = f"Replicated{engine}({path}{', ' + args if args else ''})"
        return [
            f"CREATE TABLE IF NOT EXISTS {local} ON CLUSTER {cluster} {columns}\n"
            f"ENGINE = {replicated}\n{rest}",
            f"CREATE TABLE IF NOT EXISTS {database}.{name} ON CLUSTER {cluster} AS {local}\n"
            f"ENGINE = Distributed({cluster}, {database}, {name}{LOCAL_SUFFIX}, "
            f"cityHash64({sort_key.group(1) or sort_key.group(2)}))",
        ]
    view = _CREATE_VIEW.match(statement)
    if view:
        name, select = view.groups()
        select = _READS.sub(
            lambda m: f"{m[1]} {database}.{m[2]}" if m[2] in objects else m[0], select
        )
        return [f"CREATE VIEW IF NOT EXISTS {database}.{name} ON CLUSTER {cluster} AS{select}"]
    drop = _DROP_IF_EXISTS.match(statement)
    if drop:
        # Migrations drop only views (to define them anew): one per server, no local table.
        return [f"DROP TABLE IF EXISTS {database}.{drop[1]} ON CLUSTER {cluster}"]
    return [statement]


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: its number, name, statements, checksum and version gate."""

    version: int
    name: str
    path: Path
    checksum: str
    statements: tuple[str, ...]
    requires: tuple[int, ...] | None
    capabilities: frozenset[str] = frozenset()


def split_statements(sql: str) -> list[str]:
    """Statements of a migration file, without their terminating ``;``.

    A statement ends at a line whose last non-blank character is ``;``. Whole-line ``--``
    comments and blank lines are dropped. Text after the last ``;`` is an error (a truncated
    or unterminated file), not a silent extra statement.
    """
    statements: list[str] = []
    current: list[str] = []
    for line in sql.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        text = line.rstrip()
        if text.endswith(";"):
            current.append(text[:-1])
            statement = "\n".join(current).strip()
            if statement:
                statements.append(statement)
            current = []
        else:
            current.append(text)
    if current:
        raise MigrationError(f"statement not terminated by ';' at end of line: {current[0]!r}")
    return statements


def _requires(sql: str) -> tuple[int, ...] | None:
    for line in sql.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            return None  # the header ends at the first statement line
        match = _REQUIRES.match(stripped)
        if match:
            return tuple(int(part) for part in match.group(1).split("."))
    return None


def _capabilities(sql: str) -> frozenset[str]:
    found: set[str] = set()
    for line in sql.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("--"):
            break
        match = _REQUIRES_CAPABILITY.match(stripped)
        if match:
            name = match.group(1).lower()
            if name not in CAPABILITIES:
                raise MigrationError(f"unknown requirement {name!r} (known: access_management)")
            found.add(name)
    return frozenset(found)


def version_allows(server: tuple[int, ...], required: tuple[int, ...] | None) -> bool:
    """True if an engine of version ``server`` may run a migration that ``required``."""
    if required is None:
        return True
    width = max(len(server), len(required))
    padded_server = server + (0,) * (width - len(server))
    padded_required = required + (0,) * (width - len(required))
    return padded_server >= padded_required


def _capabilities_of(path: Path, text: str) -> frozenset[str]:
    try:
        return _capabilities(text)
    except MigrationError as exc:
        raise MigrationError(f"{path.name}: {exc}") from None


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration in ``directory``, in order.

    Raises :class:`MigrationError` for a misnamed ``.sql`` file, a duplicate number, a gap
    (numbers must run 1, 2, 3, ...), or a file that does not split into statements.
    """
    migrations: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        version = int(match.group(1))
        if version in migrations:
            raise MigrationError(
                f"{path.name}: number {version:04d} is already used by "
                f"{migrations[version].path.name}"
            )
        raw = path.read_bytes()
        text = raw.decode("utf-8")
        try:
            statements = split_statements(text)
        except MigrationError as exc:
            raise MigrationError(f"{path.name}: {exc}") from None
        if not statements:
            raise MigrationError(f"{path.name}: no statements")
        migrations[version] = Migration(
            version=version,
            name=match.group(2),
            path=path,
            checksum=hashlib.sha256(raw).hexdigest(),
            statements=tuple(statements),
            requires=_requires(text),
            capabilities=_capabilities_of(path, text),
        )
    ordered = [migrations[number] for number in sorted(migrations)]
    for expected, migration in enumerate(ordered, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"{migration.path.name}: expected migration {expected:04d} next (no gaps)"
            )
    return ordered


_CREATE = re.compile(
    r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:MATERIALIZED\s+)?"
    r"(TABLE|VIEW|DATABASE|DICTIONARY|ROLE|USER|SETTINGS\s+PROFILE|QUOTA|ROW\s+POLICY)\s+"
    r"(IF\s+NOT\s+EXISTS\s+)?",
    re.IGNORECASE,
)
_ALTER_ADD = re.compile(r"\bADD\s+(COLUMN|INDEX)\s+(?!IF\s+NOT\s+EXISTS\b)", re.IGNORECASE)
_ALTER_DROP = re.compile(r"\bDROP\s+(COLUMN|INDEX)\s+(?!IF\s+EXISTS\b)", re.IGNORECASE)
_DROP = re.compile(r"^\s*DROP\s+(TABLE|VIEW|DATABASE|DICTIONARY)\s+(?!IF\s+EXISTS\b)", re.I)
_ADD_COLUMN = re.compile(
    r"^\s*ALTER TABLE (\w+) ADD COLUMN IF NOT EXISTS (\w+)\s+(.*)$", re.DOTALL | re.IGNORECASE
)


def lint_migration(migration: Migration) -> list[str]:
    """Problems that would make re-running ``migration`` harmful (empty list: none).

    Every CREATE needs ``IF NOT EXISTS``, every DROP ``IF EXISTS``, every ALTER
    ADD/DROP COLUMN|INDEX the same (ClickHouse 18.16 has no ``ADD COLUMN IF NOT EXISTS``:
    :func:`apply_migrations` runs ``ALTER TABLE t ADD COLUMN IF NOT EXISTS c ...`` as a
    plain ``ADD COLUMN`` where the column is missing, see :func:`add_column_ddl`; other
    ALTER forms with IF [NOT] EXISTS need ``-- requires: 19.1``); ``CREATE OR REPLACE``
    is refused (it would drop data a concurrent worker just wrote); a statement may not
    contain ``;`` (a second statement on the same line).
    """
    problems: list[str] = []
    for number, statement in enumerate(migration.statements, start=1):
        where = f"{migration.path.name} statement {number}"
        first = statement.split(None, 1)[0].upper() if statement.split() else ""
        if ";" in statement:
            problems.append(f"{where}: ';' inside a statement (one statement per ';' line end)")
        if first == "CREATE":
            match = _CREATE.match(statement)
            if match is None:
                problems.append(f"{where}: unrecognised CREATE")
            elif re.match(r"^\s*CREATE\s+OR\s+REPLACE", statement, re.IGNORECASE):
                problems.append(f"{where}: CREATE OR REPLACE is not idempotent")
            elif match.group(2) is None:
                problems.append(f"{where}: CREATE {match.group(1).upper()} without IF NOT EXISTS")
        elif first == "DROP" and _DROP.match(statement):
            problems.append(f"{where}: DROP without IF EXISTS")
        elif first == "ALTER" and (_ALTER_ADD.search(statement) or _ALTER_DROP.search(statement)):
            problems.append(f"{where}: ALTER ADD/DROP without IF [NOT] EXISTS")
    return problems


def lock_lines(migrations: list[Migration]) -> list[str]:
    """The ``released.txt`` lines (``NNNN sha256``) for ``migrations``."""
    return [f"{migration.version:04d} {migration.checksum}" for migration in migrations]


def check_released(directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Differences between ``released.txt`` and the files (empty list: consistent).

    A released migration must still exist with the same checksum; migrations newer than the
    last released one may still change.
    """
    migrations = {migration.version: migration for migration in load_migrations(directory)}
    lock = directory / RELEASED_FILE
    if not lock.exists():
        return [f"{lock.name} is missing"]
    problems: list[str] = []
    for line_number, line in enumerate(lock.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            problems.append(f"{lock.name}:{line_number}: expected 'NNNN sha256'")
            continue
        version, checksum = int(parts[0]), parts[1]
        migration = migrations.get(version)
        if migration is None:
            problems.append(f"released migration {version:04d} was deleted")
        elif migration.checksum != checksum:
            problems.append(
                f"{migration.path.name} was edited after its release; add a new migration instead"
            )
    return problems


def _recorded(backend: Backend) -> dict[int, set[str]]:
    result = backend.query(
        "SELECT version, groupUniqArray(checksum) FROM schema_migrations GROUP BY version"
    )
    return {int(version): {str(item) for item in checksums} for version, checksums in result.rows}


def apply_migrations(backend: Backend, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply every migration not yet recorded (and allowed by the engine version), in order.

    Returns the migrations applied by this call (empty when the schema was current). Raises
    :class:`MigrationError` if a recorded migration's checksum differs from its file, and the
    backend's errors if a statement fails; migrations applied before the failure stay
    recorded, the failing one is not, so the next run resumes with it.
    """
    migrations = load_migrations(directory)
    cluster = backend.cluster
    objects = {name for m in migrations for s in m.statements for name in _CREATED.findall(s)}

    def execute(statement: str) -> None:
        # A migration that defines a view anew drops it first; a migrator starting at the
        # same moment can meet the gap when it creates a view that reads that one (current
        # engines check a view's tables when creating it; 18.16 says "table is dropped"
        # when it meets the drop under way). The other one re-creates it at once, so the
        # statement is tried again.
        for attempt in range(_VIEW_GAP_ATTEMPTS):
            try:
                backend.execute(statement)
                return
            except QueryError as exc:
                gap = exc.code in _GAP_CODES and _CREATE_VIEW.match(statement) is not None
                if not gap or attempt == _VIEW_GAP_ATTEMPTS - 1:
                    raise
                time.sleep(0.2)

    def has_column(table: str, column: str) -> bool:
        sql = (
            "SELECT count() FROM system.columns WHERE "
            f"database = {sql_string(backend.database)} AND table = {sql_string(table)} "
            f"AND name = {sql_string(column)}"
        )
        for attempt in range(_VIEW_GAP_ATTEMPTS):
            try:
                found = backend.query(sql)
                return bool(found.rows and int(found.rows[0][0]))
            except QueryError as exc:  # a concurrent migrator's table in its gap
                if exc.code not in _GAP_CODES or attempt == _VIEW_GAP_ATTEMPTS - 1:
                    raise
                time.sleep(0.2)
        return False

    def add_column(statement: str, table: str, column: str) -> None:
        # 18.16 has no ADD COLUMN IF NOT EXISTS: add it where system.columns lacks it.
        if has_column(table, column):
            return
        on_cluster = f" ON CLUSTER {cluster}" if cluster else ""
        qualified = f"{backend.database}.{table}" if cluster else table
        try:
            backend.execute(_plain_add_column(statement, qualified, on_cluster))
        except QueryError:
            if not has_column(table, column):  # not a concurrent migrator's doing
                raise

    def renew_distributed(name: str) -> None:
        # A Distributed table is not replicated, and 18.16 refuses ALTER ... ON CLUSTER
        # for it; it holds no rows (inserts are synchronous), so it is created anew in
        # front of the altered local table, as the migration that created it did. A
        # concurrent migrator doing the same drops or creates nothing twice (IF [NOT]
        # EXISTS), and the columns come from the local table either way.
        assert cluster is not None
        created = next(
            s
            for m in migrations
            for s in m.statements
            if (table := _CREATE_TABLE.match(s)) is not None and table[1] == name
        )
        front = cluster_ddl(created, cluster, backend.database, objects)[1]
        execute(f"DROP TABLE IF EXISTS {backend.database}.{name} ON CLUSTER {cluster}")
        execute(front)

    def run(statement: str) -> None:
        added = add_column_ddl(statement, backend.database, cluster)
        if added is not None:
            table, column = added
            add_column(statement, table, column)
            if cluster:
                front = table[: -len(LOCAL_SUFFIX)]
                if not has_column(front, column):
                    renew_distributed(front)
            return
        if not cluster:
            execute(statement)
            return
        for each in cluster_ddl(statement, cluster, backend.database, objects):
            execute(each)

    ddl_refused: QueryError | None = None
    try:
        run(_SCHEMA_MIGRATIONS_DDL)
    except QueryError as exc:
        # A user without DDL rights: fine if an admin already applied everything (the
        # SELECT below then works and nothing is pending); reported below otherwise.
        ddl_refused = exc
    try:
        recorded = _recorded(backend)
    except QueryError:
        if ddl_refused is not None:
            raise ddl_refused from None
        raise
    server = backend.server_version()
    capable: dict[str, bool] = {}
    applied: list[Migration] = []
    for migration in migrations:
        checksums = recorded.get(migration.version)
        if checksums is not None:
            if checksums != {migration.checksum}:
                raise MigrationError(
                    f"{backend.display_url}: migration {migration.path.name} was applied with "
                    "different content (checksum mismatch); migrations are append-only"
                )
            continue
        if not version_allows(server, migration.requires):
            logger.info(
                "skipping migration %s: needs engine %s, have %s",
                migration.path.name,
                ".".join(map(str, migration.requires or ())),
                ".".join(map(str, server)),
            )
            continue
        missing = [
            name
            for name in sorted(migration.capabilities)
            if not capable.setdefault(name, _has_capability(backend, name))
        ]
        if missing:
            logger.info(
                "skipping migration %s: this user/engine lacks %s; an admin should apply it",
                migration.path.name,
                ", ".join(missing),
            )
            continue
        if ddl_refused is not None:
            raise MigrationError(
                f"{backend.display_url}: migration {migration.path.name} is not applied and "
                f"this user may not run DDL ({ddl_refused}); apply migrations as an admin "
                "(socialroi migrate) before starting with a least-privilege user"
            )
        for statement in migration.statements:
            run(statement)
        backend.insert(
            "schema_migrations",
            ("version", "name", "checksum", "applied_at"),
            [(migration.version, migration.name, migration.checksum, int(time.time()))],
        )
        logger.info("applied migration %s on %s", migration.path.name, backend.display_url)
        applied.append(migration)
    return applied


def _has_capability(backend: Backend, name: str) -> bool:
    if name == "access_management":
        try:
            backend.query(ACCESS_MANAGEMENT_PROBE)
        except QueryError:
            return False
        return True
    return False


def _main(argv: list[str]) -> int:
    if argv == ["--lock"]:
        print("\n".join(lock_lines(load_migrations())))
        return 0
    print("usage: python -m sinks.migrate --lock   (print released.txt lines)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
