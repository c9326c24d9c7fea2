"""A ClickHouse server over the native protocol (clickhouse-driver), from 18.16 on.

The constructor only stores the parsed URL; ``start()`` connects and creates the database when
it is missing (checked first, so a user without CREATE rights works on an existing database).
clickhouse-driver reconnects by itself on the next call after a dropped connection, so a
backend outlives a server restart: calls fail with :class:`BackendUnavailable` while the
server is down and succeed again once it is back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from clickhouse_driver import Client
from clickhouse_driver import errors as driver_errors

from sinks.backends import QueryResult, parse_version, sql_string
from sinks.errors import BackendUnavailable, QueryError, SinkError
from sinks.urls import NativeUrl

__all__ = ["TRANSIENT_SERVER_CODES", "NativeBackend"]

T = TypeVar("T")

# Server error codes that describe a passing condition, so the same call may succeed later.
TRANSIENT_SERVER_CODES = frozenset(
    {
        159,  # TIMEOUT_EXCEEDED
        160,  # TOO_SLOW
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY (replica lost ZooKeeper)
        252,  # TOO_MANY_PARTS (inserts faster than merges: back off)
        285,  # TOO_FEW_LIVE_REPLICAS
        319,  # UNKNOWN_STATUS_OF_INSERT
        425,  # SYSTEM_ERROR
        999,  # KEEPER_EXCEPTION
    }
)
_UNKNOWN_DATABASE = 81


class _NoDriverTracebacks(logging.Filter):
    """clickhouse-driver logs every failed connection attempt as a warning with a traceback
    (15 a minute while a server is down, with our back-off); the failure already reaches
    the caller as :class:`BackendUnavailable` with its reason. Keep the line, drop the
    traceback; errors keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.levelno < logging.ERROR:
            record.exc_info = None
            record.exc_text = None
        return True


logging.getLogger("clickhouse_driver.connection").addFilter(_NoDriverTracebacks())


class NativeBackend:
    """:class:`sinks.backends.Backend` for a ClickHouse server (see module docstring)."""

    def __init__(self, url: NativeUrl) -> None:
        self._url = url
        self._client: Client | None = None
        self._lock = threading.Lock()
        self._server_tz: ZoneInfo | None = None

    @property
    def database(self) -> str:
        return self._url.database

    @property
    def display_url(self) -> str:
        return self._url.display

    @property
    def cluster(self) -> str | None:
        return self._url.cluster

    def _new_client(self, database: str) -> Client:
        url = self._url
        return Client(
            host=url.host,
            port=url.port,
            user=url.user,
            password=url.password,
            database=database,
            secure=url.secure,
            verify=url.verify,
            ca_certs=url.ca_certs,
            connect_timeout=url.connect_timeout,
            send_receive_timeout=url.send_receive_timeout,
            sync_request_timeout=url.connect_timeout,
            client_name="socialroi",
        )

    def _scrub(self, text: str) -> str:
        password = self._url.password
        if password:
            text = text.replace(password, "***")
        return text

    def _translate(self, exc: BaseException, what: str) -> SinkError:
        """Map a driver or socket failure to our error types, without the password."""
        where = self.display_url
        if isinstance(exc, driver_errors.ServerException):
            message = self._scrub(str(exc.message).split("Stack trace:")[0].strip())
            text = f"{where}: {what} failed: code {exc.code}: {message}"
            if exc.code in TRANSIENT_SERVER_CODES:
                return BackendUnavailable(text)
            return QueryError(text, exc.code)
        if isinstance(
            exc,
            driver_errors.NetworkError
            | driver_errors.SocketTimeoutError
            | driver_errors.UnexpectedPacketFromServerError
            | EOFError
            | OSError,
        ):
            detail = self._scrub(str(getattr(exc, "message", None) or exc) or type(exc).__name__)
            return BackendUnavailable(f"{where}: cannot reach the server ({what}): {detail}")
        code = getattr(exc, "code", None)
        detail = self._scrub(str(getattr(exc, "message", None) or exc))
        return QueryError(
            f"{where}: {what} failed: {detail}", code if isinstance(code, int) else None
        )

    def _call(self, what: str, action: Callable[[Client], T]) -> T:
        with self._lock:
            if self._client is None:
                raise SinkError(f"{self.display_url}: backend not started")
            try:
                return action(self._client)
            except (driver_errors.Error, EOFError, OSError) as exc:
                raise self._translate(exc, what) from None

    def start(self) -> None:
        """Connect (creating the database if it is missing); idempotent."""
        with self._lock:
            if self._client is not None:
                return
            client = self._new_client(self.database)
            try:
                timezone = self._connect(client)
            except driver_errors.ServerException as exc:
                client.disconnect()
                if exc.code != _UNKNOWN_DATABASE:
                    raise self._translate(exc, "connect") from None
                self._create_database()
                client = self._new_client(self.database)
                try:
                    timezone = self._connect(client)
                except (driver_errors.Error, EOFError, OSError) as retry_exc:
                    client.disconnect()
                    raise self._translate(retry_exc, "connect") from None
            except (driver_errors.Error, EOFError, OSError) as exc:
                client.disconnect()
                raise self._translate(exc, "connect") from None
            self._client = client
            self._server_tz = _zone(timezone)

    @staticmethod
    def _connect(client: Client) -> str:
        rows = client.execute("SELECT timezone()")
        return str(rows[0][0])

    def _create_database(self) -> None:
        # Connect without a database (the user's default) to create ours.
        bootstrap = self._new_client("")
        try:
            exists = bootstrap.execute(
                f"SELECT count() FROM system.databases WHERE name = {sql_string(self.database)}"
            )
            if not exists[0][0]:
                on_cluster = f" ON CLUSTER {self.cluster}" if self.cluster else ""
                bootstrap.execute(f"CREATE DATABASE IF NOT EXISTS {self.database}{on_cluster}")
        except (driver_errors.Error, EOFError, OSError) as exc:
            raise self._translate(exc, f"create database {self.database}") from None
        finally:
            bootstrap.disconnect()

    def execute(self, sql: str) -> None:
        self._call("statement", lambda client: client.execute(sql))

    def query(self, sql: str) -> QueryResult:
        rows, columns = self._call(
            "query", lambda client: client.execute(sql, with_column_types=True)
        )
        names = tuple(name for name, _ in columns)
        types = [type_name for _, type_name in columns]
        return QueryResult(names, self._normalise(types, rows))

    def _normalise(
        self, types: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> list[tuple[Any, ...]]:
        """DateTime values to aware UTC, as chDB gives them (the driver may return naive)."""
        positions = [i for i, name in enumerate(types) if "DateTime" in name]
        if not positions or not rows:
            return [tuple(row) for row in rows]
        zone = self._server_tz or UTC
        out = []
        for row in rows:
            values = list(row)
            for i in positions:
                value = values[i]
                if isinstance(value, datetime):
                    if value.tzinfo is None:
                        value = value.replace(tzinfo=zone)
                    values[i] = value.astimezone(UTC)
            out.append(tuple(values))
        return out

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        statement = f"INSERT INTO {table} ({', '.join(columns)}) VALUES"
        payload = rows if isinstance(rows, list) else list(rows)
        # On a cluster the table is Distributed: acknowledge only once every shard has the
        # rows, not when they are queued on this server for later forwarding.
        settings = {"insert_distributed_sync": 1} if self.cluster else None
        self._call(
            f"insert into {table}",
            lambda client: client.execute(statement, payload, types_check=False, settings=settings),
        )
        return len(payload)

    def server_version(self) -> tuple[int, ...]:
        return parse_version(str(self.query("SELECT version()").rows[0][0]))

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.disconnect()


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
