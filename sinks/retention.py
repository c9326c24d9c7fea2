"""Retention of the raw event archive: whole months are dropped once they are older than
the configured number of days (a partition drop is instant and works on every engine; a
month is dropped only when all of it is past the limit, so events are kept at least that
long and at most a month longer)."""

from __future__ import annotations

from datetime import UTC, datetime

from sinks.backends import Backend, sql_string
from sinks.migrate import LOCAL_SUFFIX
from sinks.tables import RAW_TABLE

__all__ = ["prune_raw_events"]


def prune_raw_events(backend: Backend, keep_days: int, now_s: float) -> list[int]:
    """Drop the raw archive's months older than ``keep_days``; returns them (YYYYMM).

    ``keep_days`` 0 keeps everything. Needs DDL rights (run it as an admin, as
    ``socialroi migrate`` does); raises ``QueryError`` otherwise.
    """
    if keep_days <= 0:
        return []
    cutoff = datetime.fromtimestamp(now_s - keep_days * 86400, UTC)
    cutoff_month = cutoff.year * 100 + cutoff.month
    # On a cluster the parts belong to the replicated local table behind the Distributed one.
    table = f"{RAW_TABLE}{LOCAL_SUFFIX}" if backend.cluster else RAW_TABLE
    on_cluster = f" ON CLUSTER {backend.cluster}" if backend.cluster else ""
    result = backend.query(
        "SELECT DISTINCT partition FROM system.parts WHERE active AND "
        f"database = {sql_string(backend.database)} AND table = {sql_string(table)}"
    )
    dropped = sorted(int(p) for (p,) in result.rows if int(p) < cutoff_month)
    for month in dropped:
        backend.execute(f"ALTER TABLE {table}{on_cluster} DROP PARTITION {month}")
    return dropped
