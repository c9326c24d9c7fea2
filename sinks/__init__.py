"""Every ClickHouse touch: backends (server or embedded chDB), migrations, writer, reader.

Depends on :mod:`pipeline` only (the ports it implements and the settings it reads); never on
``streams``, Faust or Kafka. Every error raised here is a :class:`SinkError`, except the
writer's back-pressure signal :class:`pipeline.ports.SinkUnavailable`.
"""

from sinks.backends import Backend, QueryResult, connected, open_backend
from sinks.errors import (
    BackendUnavailable,
    InvalidUrl,
    MigrationError,
    QueryError,
    SinkError,
    StoreLocked,
)
from sinks.migrate import apply_migrations
from sinks.reader import (
    StoredDeadLetter,
    credited_rows,
    dead_letter_counts,
    dead_letters,
    kpi_rows,
    skipped_daily,
)
from sinks.tables import RowError
from sinks.urls import parse_store_url
from sinks.writer import ClickHouseSink, FlushEvent, FlushObserver

__all__ = [
    "Backend",
    "BackendUnavailable",
    "ClickHouseSink",
    "FlushEvent",
    "FlushObserver",
    "InvalidUrl",
    "MigrationError",
    "QueryError",
    "QueryResult",
    "RowError",
    "SinkError",
    "StoreLocked",
    "StoredDeadLetter",
    "apply_migrations",
    "connected",
    "credited_rows",
    "dead_letter_counts",
    "dead_letters",
    "kpi_rows",
    "open_backend",
    "parse_store_url",
    "skipped_daily",
]
