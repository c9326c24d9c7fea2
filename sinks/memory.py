"""An in-memory :class:`~sinks.backends.Backend` for tests of code that writes through one.

It is a double of our own seam, not of a driver: it keeps inserted rows per table, records
executed statements, can be told to fail the next calls, and answers only the queries the
``sinks`` package itself issues without data semantics (the migrations record). Anything else
asks for a ``responder``. Not for production: nothing survives the process.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

from sinks.backends import QueryResult
from sinks.errors import QueryError, SinkError

__all__ = ["MemoryBackend"]

_RECORDED_MIGRATIONS = "SELECT version, groupUniqArray(checksum) FROM schema_migrations"
# The migrator's question before it adds a column (sinks.migrate.apply_migrations).
_COLUMN_PROBE = re.compile(
    r"^SELECT count\(\) FROM system\.columns WHERE database = '\w+' "
    r"AND table = '(\w+)' AND name = '(\w+)'$"
)


class MemoryBackend:
    """Rows in ``tables[name]`` as dicts; statements in ``executed``; see module docstring."""

    def __init__(
        self,
        version: tuple[int, ...] = (26, 9),
        database: str = "memory",
        responder: Callable[[str], QueryResult] | None = None,
    ) -> None:
        self.version = version
        self._database = database
        self._responder = responder
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.executed: list[str] = []
        self.insert_calls: list[tuple[str, int]] = []
        self.started = False
        self.closed = False
        self._failures: list[BaseException] = []
        self._lock = threading.Lock()
        self.before_insert: Callable[[str, int], None] | None = None

    @property
    def database(self) -> str:
        return self._database

    @property
    def display_url(self) -> str:
        return f"memory://{self._database}"

    @property
    def cluster(self) -> str | None:
        return None

    def fail_next(self, error: BaseException, times: int = 1) -> None:
        """Make the next ``times`` calls of start/execute/insert raise ``error``."""
        self._failures.extend([error] * times)

    def _maybe_fail(self) -> None:
        with self._lock:
            if self._failures:
                raise self._failures.pop(0)

    def start(self) -> None:
        self._maybe_fail()
        self.started = True
        self.closed = False

    def _require_started(self) -> None:
        if not self.started or self.closed:
            raise SinkError(f"{self.display_url}: backend not started")

    def execute(self, sql: str) -> None:
        self._require_started()
        self._maybe_fail()
        self.executed.append(sql)

    def query(self, sql: str) -> QueryResult:
        self._require_started()
        if sql.startswith(_RECORDED_MIGRATIONS):
            grouped: dict[int, list[str]] = {}
            for row in self.tables.get("schema_migrations", []):
                checksums = grouped.setdefault(int(row["version"]), [])
                if row["checksum"] not in checksums:
                    checksums.append(row["checksum"])
            return QueryResult(("version", "checksums"), sorted(grouped.items()))
        if sql == "SELECT count() FROM system.roles":  # no SQL access control here
            raise QueryError("memory backend has no access management", 497)
        if sql == "SELECT version()":
            return QueryResult(("version()",), [(".".join(map(str, self.version)),)])
        probe = _COLUMN_PROBE.match(sql)
        if probe:  # a column exists once a statement executed here added it
            added = f"ALTER TABLE {probe[1]} ADD COLUMN {probe[2]} "
            found = any(statement.startswith(added) for statement in self.executed)
            return QueryResult(("count()",), [(int(found),)])
        if self._responder is None:
            raise NotImplementedError(f"MemoryBackend cannot answer: {sql[:80]}")
        return self._responder(sql)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        self._require_started()
        if self.before_insert is not None:
            self.before_insert(table, len(rows))
        self._maybe_fail()
        stored = [dict(zip(columns, row, strict=True)) for row in rows]
        self.tables.setdefault(table, []).extend(stored)
        self.insert_calls.append((table, len(stored)))
        return len(stored)

    def server_version(self) -> tuple[int, ...]:
        self._require_started()
        return self.version

    def close(self) -> None:
        self.closed = True
        self.started = False
