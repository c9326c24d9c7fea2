"""The seam between ``sinks`` and a ClickHouse engine: a server or embedded chDB.

:func:`open_backend` turns a store URL into a :class:`Backend` without any I/O; ``start()``
connects. ``with connected(url) as backend:`` is the one way a command opens, starts and
closes one. Both implementations give the same Python values back (see :mod:`sinks.rowbinary`
for the list): integers as ``int``, strings as ``str`` (``bytes`` when not UTF-8), DateTime as
timezone-aware UTC ``datetime``. Calls block; async callers run them in a thread. A backend
serialises its own calls, so one instance may be shared between threads.

Errors: :class:`~sinks.errors.BackendUnavailable` when the store cannot be reached or asks to
slow down (retry later), :class:`~sinks.errors.QueryError` when a statement is rejected,
:class:`~sinks.errors.StoreLocked` when a chDB directory is held by another process. Messages
never contain the password.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from sinks.urls import ChdbUrl, parse_store_url

__all__ = ["Backend", "QueryResult", "connected", "open_backend", "parse_version", "sql_string"]


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Rows of a SELECT with their column names (in SELECT order)."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        """The rows as ``{column: value}`` dicts."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


class Backend(Protocol):
    """A ClickHouse engine holding one database; statements use unqualified table names."""

    @property
    def database(self) -> str:
        """The database every statement runs in."""
        ...

    @property
    def display_url(self) -> str:
        """Where this backend points, without password."""
        ...

    @property
    def cluster(self) -> str | None:
        """The cluster DDL runs ``ON CLUSTER`` of, or ``None`` for a single server."""
        ...

    def start(self) -> None:
        """Connect, and create the database if it does not exist. Idempotent."""
        ...

    def execute(self, sql: str) -> None:
        """Run one statement that returns no rows (DDL, INSERT ... SELECT)."""
        ...

    def query(self, sql: str) -> QueryResult:
        """Run one SELECT and return every row."""
        ...

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        """Insert ``rows`` (values in ``columns`` order) as one batch; return the row count.

        Returns only once the engine has acknowledged the whole batch. On error nothing is
        known about which rows landed; inserting the same rows again is the recovery (the
        tables are ReplacingMergeTree, so a repeat changes nothing).
        """
        ...

    def server_version(self) -> tuple[int, ...]:
        """The engine's version, e.g. ``(18, 16, 1)`` or ``(26, 9, 2, 1)``."""
        ...

    def close(self) -> None:
        """Release the connection. Idempotent; ``start()`` may be called again afterwards."""
        ...


def parse_version(text: str) -> tuple[int, ...]:
    """``'18.16.1'`` -> ``(18, 16, 1)``; non-numeric suffixes (``'23.8.1.2992-lts'``) end it."""
    parts: list[int] = []
    for piece in text.strip().split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break
    if not parts:
        raise ValueError(f"not a version: {text!r}")
    return tuple(parts)


def sql_string(value: str) -> str:
    """``value`` as a ClickHouse string literal (quotes and backslashes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def open_backend(url: str) -> Backend:
    """The backend for a store URL (see :mod:`sinks.urls`). Performs no I/O.

    Raises :class:`~sinks.errors.InvalidUrl` for an unusable URL.
    """
    parsed = parse_store_url(url)
    if isinstance(parsed, ChdbUrl):
        from sinks.embedded import ChdbBackend

        return ChdbBackend(parsed)
    from sinks.native import NativeBackend

    return NativeBackend(parsed)


@contextmanager
def connected(url: str) -> Iterator[Backend]:
    """The started backend of ``url``, closed when the block ends, however it ends (a failed
    ``start`` included). Raises what :func:`open_backend` and ``start`` raise."""
    backend = open_backend(url)
    try:
        backend.start()
        yield backend
    finally:
        backend.close()
