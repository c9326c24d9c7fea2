"""The one exception family of the ``sinks`` package.

Every failure that leaves ``sinks`` is a :class:`SinkError`, except the writer's back-pressure
signal, which is :class:`pipeline.ports.SinkUnavailable` (the contract the worker retries on).
Messages never contain passwords: URLs are shown through :func:`pipeline.settings.redact_url`.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "InvalidUrl",
    "MigrationError",
    "QueryError",
    "SinkError",
    "StoreLocked",
]


class SinkError(Exception):
    """Base class of every error raised by ``sinks``."""


class InvalidUrl(SinkError, ValueError):
    """The store URL cannot be understood (scheme, port, parameter)."""


class BackendUnavailable(SinkError):
    """The store cannot be reached or refuses work for now; the same call may succeed later.

    Raised for refused or dropped connections, timeouts, and server-side conditions that pass
    (too many parts, too many queries, memory limit). The writer turns it into
    :class:`pipeline.ports.SinkUnavailable` with a back-off delay.
    """


class StoreLocked(SinkError):
    """The embedded chDB store is held by another process (chDB allows one per directory)."""


class QueryError(SinkError):
    """The store rejected a statement; retrying the same statement will fail the same way.

    ``code`` is the ClickHouse error code when the engine gave one.
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class MigrationError(SinkError):
    """The migration files or the recorded migrations are inconsistent; nothing was changed
    by the failing step."""
