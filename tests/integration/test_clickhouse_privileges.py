"""Least privilege on the real ClickHouse 18.16: the users of deploy/local/clickhouse/users.xml.

18.16 has no SQL users or GRANT; the split comes from settings profiles: the ingest user has
``allow_ddl=0`` (INSERT and SELECT, no CREATE/ALTER/DROP), the reader ``readonly=1`` (SELECT
only: on 18.16 the one setting that also refuses table functions such as ``url()``). A private
server started from the same users.xml, so the test needs no restart of the shared one. The
passwords are the local test passwords documented in users.xml (override with
SOCIALROI_TEST_INGEST_PASSWORD / SOCIALROI_TEST_READER_PASSWORD if a local users.xml differs).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_driver import Client  # type: ignore[import-untyped]
from clickhouse_driver import errors as driver_errors
from pydantic import SecretStr

from pipeline.ports import KpiSnapshot
from pipeline.settings import ClickHouseSettings
from sinks.backends import open_backend
from sinks.errors import MigrationError, QueryError
from sinks.migrate import apply_migrations, load_migrations
from sinks.reader import kpi_rows
from sinks.views import campaign_windows
from sinks.writer import ClickHouseSink
from tests.integration.conftest_clickhouse import PrivateClickHouse

pytestmark = pytest.mark.integration

INGEST = (
    "socialroi_ingest",
    os.environ.get("SOCIALROI_TEST_INGEST_PASSWORD", "socialroi-ingest-local"),
)
READER = (
    "socialroi_reader",
    os.environ.get("SOCIALROI_TEST_READER_PASSWORD", "socialroi-reader-local"),
)
DATABASE = "socialroi"  # users.xml allows this database only


def url(server: PrivateClickHouse, user: tuple[str, str], database: str = DATABASE) -> str:
    return f"clickhouse://{user[0]}:{user[1]}@127.0.0.1:{server.port}/{database}"


def client(server: PrivateClickHouse, user: tuple[str, str] | None = None) -> Client:
    name, password = user or ("default", "")
    return Client(
        host="127.0.0.1", port=server.port, user=name, password=password, database=DATABASE
    )


def refused(connection: Client, sql: str) -> str:
    with pytest.raises(driver_errors.ServerException) as info:
        connection.execute(sql)
    return str(info.value.message)


SNAPSHOT = KpiSnapshot(
    "spring", "instagram", "tumbling", 60, 1_790_812_800_000, 1_790_812_860_000, True, 1,
    {"impressions": 100, "likes": 7, "media_spend_micros": 2_500_000},
)  # fmt: skip


@pytest.fixture
def migrated(private_clickhouse: PrivateClickHouse) -> Iterator[PrivateClickHouse]:
    """The private server with the pipeline database migrated by the admin (default)."""
    admin = open_backend(f"clickhouse://default@127.0.0.1:{private_clickhouse.port}/{DATABASE}")
    admin.start()
    try:
        apply_migrations(admin)
        admin.execute("CREATE TABLE IF NOT EXISTS default.elsewhere (a UInt8) ENGINE = Memory")
    finally:
        admin.close()
    yield private_clickhouse


def test_ingest_user_writes_through_the_sink_but_cannot_change_the_schema(
    migrated: PrivateClickHouse,
) -> None:
    ingest_url = url(migrated, INGEST)

    async def write() -> None:
        # start() applies migrations: all recorded, so it must run no DDL.
        sink = ClickHouseSink(ClickHouseSettings(url=SecretStr(ingest_url)))
        await sink.start()
        sink.add_snapshots([SNAPSHOT])
        await sink.flush()
        await sink.close()

    asyncio.run(write())
    backend = open_backend(ingest_url)
    backend.start()
    try:
        (row,) = kpi_rows(backend)
        assert (row["likes"], row["impressions"]) == (7, 100)
    finally:
        backend.close()

    ingest = client(migrated, INGEST)
    try:
        for sql in (
            "DROP TABLE kpi_panes",
            "DROP TABLE IF EXISTS kpi_campaign_windows",
            "TRUNCATE TABLE kpi_panes",
            "ALTER TABLE kpi_panes DELETE WHERE 1",
            "ALTER TABLE kpi_panes ADD COLUMN x UInt8",
            "CREATE TABLE t (a UInt8) ENGINE = Memory",
            "DROP DATABASE socialroi",
        ):
            assert "DDL" in refused(ingest, sql), sql
        assert "allow_ddl" in refused(ingest, "SET allow_ddl = 1")
        # Other databases are out of reach.
        refused(ingest, "INSERT INTO default.elsewhere VALUES (1)")
        assert ingest.execute("SELECT count() FROM kpi_panes") == [(1,)]
    finally:
        ingest.disconnect()


def test_ingest_user_cannot_start_on_an_unmigrated_database(
    private_clickhouse: PrivateClickHouse,
) -> None:
    admin = Client(host="127.0.0.1", port=private_clickhouse.port)
    try:
        admin.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    finally:
        admin.disconnect()
    backend = open_backend(url(private_clickhouse, INGEST))
    backend.start()
    try:
        with pytest.raises(QueryError, match="DDL"):
            apply_migrations(backend)
    finally:
        backend.close()


def test_ingest_user_is_told_to_ask_an_admin_for_a_pending_migration(
    migrated: PrivateClickHouse,
) -> None:
    admin = client(migrated)
    try:
        admin.execute("ALTER TABLE schema_migrations DELETE WHERE version = 6")
        for _ in range(50):
            if admin.execute("SELECT count() FROM schema_migrations WHERE version = 6") == [(0,)]:
                break
            asyncio.run(asyncio.sleep(0.1))
    finally:
        admin.disconnect()
    backend = open_backend(url(migrated, INGEST))
    backend.start()
    try:
        with pytest.raises(MigrationError, match=r"0006_reader_views\.sql is not applied"):
            apply_migrations(backend)
    finally:
        backend.close()


def test_reader_user_reads_views_with_settings_but_cannot_write(
    migrated: PrivateClickHouse,
) -> None:
    admin = open_backend(f"clickhouse://default@127.0.0.1:{migrated.port}/{DATABASE}")
    admin.start()
    try:
        admin.insert(
            "kpi_panes",
            ("campaign_id", "channel", "window_kind", "window_seconds", "window_start",
             "window_end", "is_final", "version", "impressions", "likes"),
            [("spring", "x", "tumbling", 60, 1_790_812_800, 1_790_812_860, 1, 1, 100, 7)],
        )  # fmt: skip
    finally:
        admin.close()

    backend = open_backend(url(migrated, READER))
    backend.start()
    try:
        (row,) = campaign_windows(backend)
        assert row["engagement_rate"] == 0.07
    finally:
        backend.close()

    reader = client(migrated, READER)
    try:
        # Grafana's plugin sends max_execution_time with each query: 18.16 answers (it does
        # not apply client settings in readonly=1), and the profile's limit holds.
        assert reader.execute(
            "SELECT value FROM system.settings WHERE name = 'max_execution_time'",
            settings={"max_execution_time": 30},
        ) == [("60",)]
        assert reader.execute("SELECT count() FROM kpi_current") == [(1,)]
        for sql in (
            "SET readonly = 0",
            "SET max_threads = 1",
            "INSERT INTO kpi_panes (campaign_id) VALUES ('x')",
            "ALTER TABLE kpi_panes DELETE WHERE 1",
            "DROP TABLE kpi_panes",
            "TRUNCATE TABLE kpi_panes",
            "CREATE TABLE t (a UInt8) ENGINE = Memory",
            "CREATE TEMPORARY TABLE t (a UInt8) ENGINE = Memory",
        ):
            assert "readonly" in refused(reader, sql).lower(), sql
    finally:
        reader.disconnect()


class _Listener:
    """A TCP port on loopback that records every connection made to it (an HTTP, MySQL or
    ClickHouse server the reader might make the server call)."""

    def __init__(self) -> None:
        self.hits = 0
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(8)
        self._socket.settimeout(0.2)
        self.port = int(self._socket.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            self.hits += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._socket.close()


def test_reader_has_no_route_out_of_the_pipeline_database(migrated: PrivateClickHouse) -> None:
    """Every route the issue found or could find, tried as socialroi_reader on the shipped
    users.xml: other databases, table functions (which would run as another user or make
    the server connect anywhere), dictionaries, HTTP through the server."""
    admin = client(migrated)
    try:
        admin.execute("INSERT INTO default.elsewhere (a) VALUES", [(42,)])
        # The admin, which the loopback routes would reach, can read it: the refusals below
        # are the reader's, not a missing table.
        assert admin.execute("SELECT a FROM default.elsewhere") == [(42,)]
    finally:
        admin.disconnect()
    listener = _Listener()
    reader = client(migrated, READER)
    here = f"127.0.0.1:{migrated.port}"
    away = f"127.0.0.1:{listener.port}"
    try:
        assert "access denied" in refused(reader, "SELECT a FROM default.elsewhere").lower()
        # Nor its name: the system tables list only the reader's database.
        assert reader.execute("SHOW TABLES FROM default") == []
        assert reader.execute(
            "SELECT DISTINCT database FROM system.tables WHERE database != 'system'"
        ) == [(DATABASE,)]
        table_functions = (
            f"url('http://{away}/?query=SELECT%20a%20FROM%20default.elsewhere', TSV, 'a UInt8')",
            f"url('http://{here}/', TSV, 'a String')",
            f"remote('{here}', default.elsewhere)",
            f"remote('{here}', system.one, 'default', '')",
            f"remote('{away}', system.one)",
            f"remoteSecure('{away}', system.one)",
            "cluster('socialroi', default.elsewhere)",
            "file('elsewhere.tsv', TSV, 'a UInt8')",
            "merge('default', '.*')",
            f"mysql('{away}', 'db', 't', 'user', 'password')",
            "jdbc('jdbc:mysql://127.0.0.1/db', 'db', 't')",
            "odbc('DSN=x', 'db', 't')",
            f"s3('http://{away}/bucket/key', 'TSV', 'a UInt8')",
            "input('a UInt8')",
            "numbers(3)",
        )
        for function in table_functions:
            message = refused(reader, f"SELECT * FROM {function}")
            assert "Table functions are forbidden in readonly mode" in message, function
        # No dictionary is configured on the local server, so none can read anything.
        assert reader.execute("SELECT count() FROM system.dictionaries") == [(0,)]
        assert (
            "dictionary"
            in refused(reader, "SELECT dictGetString('elsewhere', 'a', toUInt64(1))").lower()
        )
        # The views still answer.
        assert reader.execute("SELECT count() FROM kpi_campaign_windows") == [(0,)]
    finally:
        reader.disconnect()
        listener.close()
    assert listener.hits == 0, "the server connected to an address the reader named"
    # HTTP through the server: the local server has no HTTP port, so no query can reach it
    # as the password-less default.
    text = migrated.config.read_text()
    assert "<http_port>" not in text and "<https_port>" not in text


def test_access_migrations_parse_on_a_current_engine(tmp_path: Path) -> None:
    """Migrations 0007 and 0011 run only on servers with SQL access control, which this
    machine does not have (18.16 and chDB skip them): at least the current engine's parser
    (chDB) must accept every statement, so a typo cannot wait for an operator's upgrade."""
    gated = [m for m in load_migrations() if "access_management" in m.capabilities]
    assert {m.path.name[:4] for m in gated} >= {"0007", "0011"}
    backend = open_backend(f"chdb://{tmp_path / 'chdb'}")
    backend.start()
    try:
        for migration in gated:
            for statement in migration.statements:
                (row,) = backend.query(f"EXPLAIN AST {statement}").rows
                assert row[0], statement
    finally:
        backend.close()
