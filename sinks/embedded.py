"""Embedded ClickHouse (chDB) storing on local disk: the default when no server is configured.

What chDB allows (measured with chDB 4.4 / engine 26.9, see tests):

* One process per store directory. The engine takes an exclusive ``flock`` on
  ``PATH/status``; a second process fails to open the store, even read-only (``mode=ro``).
  A killed process releases the lock with it, so a crash never leaves the store locked.
  :meth:`ChdbBackend.start` turns that failure into :class:`StoreLocked` naming the holder's
  PID, instead of chDB's bare "Error initializing EmbeddedServer".
* One store per process. Any number of connections to the same directory may be open in one
  process (they share the engine); opening a different directory while one is open fails.
  This module refuses that up front with :class:`StoreLocked`.

Consequence: ``socialroi verify`` cannot read a chDB store while a worker has it open; stop
the worker first, or use a ClickHouse server when several processes need the data.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sinks.backends import QueryResult, parse_version, sql_string
from sinks.errors import BackendUnavailable, QueryError, SinkError, StoreLocked
from sinks.rowbinary import decode_with_names_and_types, encode_rows
from sinks.urls import ChdbUrl

__all__ = ["ChdbBackend"]

# Engine error codes that pass: memory limit, too many parts, not enough disk space.
_TRANSIENT_CODES = frozenset({241, 243, 252})
_CODE = re.compile(r"Code: (\d+)\.")

# Which store directory this process's embedded engine is bound to, and by how many backends.
_registry_lock = threading.Lock()
_open_path: str | None = None
_open_count = 0


def _claim(path: str) -> None:
    global _open_path, _open_count
    with _registry_lock:
        if _open_path is not None and _open_path != path:
            raise StoreLocked(
                f"chdb://{path}: this process already has the chDB store {_open_path} open; "
                "chDB binds one store directory per process (close the other backend first)"
            )
        _open_path = path
        _open_count += 1


def _release(path: str) -> None:
    global _open_path, _open_count
    with _registry_lock:
        if _open_path == path:
            _open_count -= 1
            if _open_count <= 0:
                _open_path, _open_count = None, 0


def _holder(path: str) -> str | None:
    """Who holds the store's lock: ``'PID n'`` if another process does, else None."""
    status = Path(path) / "status"
    try:
        handle = status.open("rb")
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = handle.read(200).decode(errors="replace")
            match = re.search(r"PID: (\d+)", text)
            return f"PID {match.group(1)}" if match else "another process"
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return None


def _error_code(message: str) -> int | None:
    match = _CODE.search(message)
    return int(match.group(1)) if match else None


class ChdbBackend:
    """:class:`sinks.backends.Backend` on embedded chDB (see module docstring for locking)."""

    def __init__(self, url: ChdbUrl) -> None:
        self._url = url
        self._path = os.path.abspath(url.path)
        self._conn: Any = None
        self._lock = threading.Lock()
        self._column_types: dict[str, dict[str, str]] = {}

    @property
    def database(self) -> str:
        return self._url.database

    @property
    def display_url(self) -> str:
        return self._url.display

    @property
    def cluster(self) -> str | None:
        return None

    def _translate(self, exc: BaseException, what: str) -> SinkError:
        message = str(exc).strip()
        code = _error_code(message)
        text = f"{self.display_url}: {what} failed: {message}"
        if code in _TRANSIENT_CODES:
            return BackendUnavailable(text)
        return QueryError(text, code)

    def start(self) -> None:
        """Open the store (creating the directory and database as needed); idempotent.

        Raises :class:`StoreLocked` if another process holds the directory, or if this process
        already has a different chDB store open.
        """
        with self._lock:
            if self._conn is not None:
                return
            _claim(self._path)
            try:
                self._conn = self._open()
            except BaseException:
                _release(self._path)
                raise

    def _open(self) -> Any:
        from chdb import state

        Path(self._path).mkdir(parents=True, exist_ok=True)
        try:
            conn = state.connect(self._path)
        except Exception as exc:
            holder = _holder(self._path)
            if holder is not None:
                raise StoreLocked(
                    f"chdb://{self._path} is open in another process ({holder}); chDB allows "
                    "one process per store: stop that process, or use a ClickHouse server "
                    "(clickhouse://...) when several processes need the data"
                ) from None
            raise self._translate(exc, "open") from None
        try:
            conn.query(f"CREATE DATABASE IF NOT EXISTS {self.database}")
            conn.query(f"USE {self.database}")
        except Exception as exc:
            conn.close()
            raise self._translate(exc, "create database") from None
        return conn

    def _run(self, sql: str, fmt: str, what: str) -> Any:
        with self._lock:
            if self._conn is None:
                raise SinkError(f"{self.display_url}: backend not started")
            try:
                return self._conn.query(sql, fmt)
            except Exception as exc:
                raise self._translate(exc, what) from None

    def execute(self, sql: str) -> None:
        self._run(sql, "CSV", "statement")
        self._column_types.clear()  # the statement may have changed a table's columns

    def query(self, sql: str) -> QueryResult:
        result = self._run(sql, "RowBinaryWithNamesAndTypes", "query")
        names, _types, rows = decode_with_names_and_types(result.bytes())
        return QueryResult(names, rows)

    def _types_of(self, table: str) -> dict[str, str]:
        types = self._column_types.get(table)
        if types is None:
            result = self.query(
                "SELECT name, type FROM system.columns WHERE database = "
                f"{sql_string(self.database)} AND table = {sql_string(table)}"
            )
            types = {str(name): str(type_name) for name, type_name in result.rows}
            if not types:
                raise QueryError(f"{self.display_url}: table {table} does not exist")
            self._column_types[table] = types
        return types

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        """One RowBinary insert of every row (exact bytes for String columns)."""
        if not rows:
            return 0
        known = self._types_of(table)
        missing = [name for name in columns if name not in known]
        if missing:
            self._column_types.pop(table, None)
            raise QueryError(f"{self.display_url}: {table} has no column(s) {', '.join(missing)}")
        data = encode_rows([known[name] for name in columns], rows)
        statement = f"INSERT INTO {table} ({', '.join(columns)})"
        with self._lock:
            if self._conn is None:
                raise SinkError(f"{self.display_url}: backend not started")
            try:
                with self._conn.send_insert(statement, "RowBinary") as inserter:
                    inserter.append(data)
                    inserter.finish()
            except Exception as exc:
                raise self._translate(exc, f"insert into {table}") from None
        return len(rows)

    def server_version(self) -> tuple[int, ...]:
        return parse_version(str(self.query("SELECT version()").rows[0][0]))

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
            _release(self._path)
