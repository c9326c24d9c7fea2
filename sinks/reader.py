"""Reading back what the sink wrote, identically on a server and on chDB.

Times come back as integer epoch milliseconds (``*_ms`` keys), the unit of
:class:`pipeline.ports.KpiSnapshot`; they are computed in SQL, so they do not depend on the
Python types a driver returns. Readers see the newest version of each KPI window
(``kpi_current``) and each dead letter once, whether or not ClickHouse has merged duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from pipeline.kpi import KPI_COUNTERS
from pipeline.ports import DeadLetterRow
from sinks.backends import Backend, sql_string
from sinks.tables import (
    CREDIT_VIEW,
    DEAD_LETTER_ORIGINAL_TABLE,
    DEAD_LETTER_TABLE,
    KPI_VIEW,
    SKIPPED_VIEW,
)

__all__ = [
    "StoredDeadLetter",
    "dead_letter_counts",
    "dead_letters",
    "dead_letters_by_topic",
    "kpi_rows",
    "skipped_daily",
]


@dataclass(slots=True)
class StoredDeadLetter(DeadLetterRow):
    """A dead letter as the ``dead_letters`` table keeps it: ``payload`` is the original's
    first bytes (all of it when ``complete``), ``payload_bytes`` and ``payload_sha256`` (hex)
    describe the whole original, which the dead-letter topic carries."""

    payload_bytes: int
    payload_sha256: str

    @property
    def complete(self) -> bool:
        return len(self.payload) == self.payload_bytes


_KPI_SELECT = ",\n    ".join(
    (
        "campaign_id",
        "channel",
        "window_kind",
        "window_seconds",
        "toUInt64(toUnixTimestamp(window_start)) * 1000 AS window_start_ms",
        "toUInt64(toUnixTimestamp(window_end)) * 1000 AS window_end_ms",
        "is_final",
        "version",
        *KPI_COUNTERS,
        "toUInt64(toUnixTimestamp(updated_at)) * 1000 AS updated_at_ms",
    )
)

# One row per source position, whatever merges have or have not happened yet.
_DEDUPLICATED_DEAD_LETTERS = f"""
    SELECT
        topic,
        partition,
        offset,
        any(reason) AS reason,
        any(detail) AS detail,
        any(kafka_ts) AS kafka_ts,
        any(payload) AS payload,
        min(received_at) AS received_at
    FROM {DEAD_LETTER_TABLE}
    GROUP BY topic, partition, offset
"""


def kpi_rows(
    backend: Backend,
    window_seconds: int | None = None,
    window_kind: str | None = None,
    campaign: str | None = None,
) -> list[dict[str, Any]]:
    """The newest version of every KPI window, optionally filtered, as dicts.

    Keys: ``campaign_id``, ``channel``, ``window_kind``, ``window_seconds``,
    ``window_start_ms``, ``window_end_ms``, ``is_final`` (bool), ``version``, one key per
    counter in :data:`pipeline.kpi.KPI_COUNTERS`, and ``updated_at_ms``. Ordered by campaign,
    channel, kind, size and start.
    """
    conditions = []
    if window_seconds is not None:
        conditions.append(f"window_seconds = {int(window_seconds)}")
    if window_kind is not None:
        conditions.append(f"window_kind = {sql_string(window_kind)}")
    if campaign is not None:
        conditions.append(f"campaign_id = {sql_string(campaign)}")
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    result = backend.query(
        f"SELECT\n    {_KPI_SELECT}\nFROM {KPI_VIEW}\n{where}\n"
        "ORDER BY campaign_id, channel, window_kind, window_seconds, window_start_ms"
    )
    rows = result.dicts()
    for row in rows:
        row["is_final"] = bool(row["is_final"])
    return rows


def dead_letter_counts(backend: Backend) -> dict[str, int]:
    """How many distinct dead letters (by topic, partition, offset) there are per reason."""
    result = backend.query(
        f"SELECT reason, count() AS letters FROM ({_DEDUPLICATED_DEAD_LETTERS}) "
        "GROUP BY reason ORDER BY reason"
    )
    return {str(reason): int(count) for reason, count in result.rows}


def dead_letters_by_topic(backend: Backend) -> list[dict[str, Any]]:
    """Distinct dead letters (by topic, partition, offset) per source topic and reason, over
    everything stored: ``topic``, ``reason``, ``letters``; ordered by topic, reason."""
    return backend.query(
        f"SELECT topic, reason, count() AS letters FROM ({_DEDUPLICATED_DEAD_LETTERS}) "
        "GROUP BY topic, reason ORDER BY topic, reason"
    ).dicts()


def skipped_daily(
    backend: Backend, first: date | None = None, end: date | None = None
) -> list[dict[str, Any]]:
    """Late and duplicate events per UTC day of event time in ``[first, end)`` (``None``:
    unbounded), campaign key, channel and source topic (``skipped_daily``, migration 0014):
    ``day`` (ISO), ``campaign_id``, ``channel``, ``topic``, ``late``, ``duplicates``."""
    conditions = []
    if first is not None:
        conditions.append(f"day >= toDate({sql_string(first.isoformat())})")
    if end is not None:
        conditions.append(f"day < toDate({sql_string(end.isoformat())})")
    where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
    result = backend.query(
        "SELECT toString(day) AS iso_day, campaign_id, channel, topic, late, duplicates "
        f"FROM {SKIPPED_VIEW} {where}ORDER BY day, campaign_id, channel, topic"
    )
    return [
        {
            "day": iso_day,
            "campaign_id": campaign,
            "channel": channel,
            "topic": topic,
            "late": int(late),
            "duplicates": int(duplicates),
        }
        for iso_day, campaign, channel, topic, late, duplicates in result.rows
    ]


def dead_letters(
    backend: Backend, topic: str | None = None, limit: int = 1000
) -> list[StoredDeadLetter]:
    """Distinct dead letters with their stored payload bytes, in source order.

    The payload travels as hex so that no driver's text decoding can alter it. A dead letter
    written before migration 0009 has no ``dead_letter_originals`` row: its length and
    digest are those of the payload it kept.
    """
    where = f"WHERE topic = {sql_string(topic)}" if topic is not None else ""
    # The originals are read in a subquery of their own (deduplicated like the letters),
    # joined on the initiator: no distributed subquery inside a distributed one.
    result = backend.query(
        "SELECT reason, detail, topic, partition, offset, "
        "toUInt64(toUnixTimestamp(kafka_ts)) * 1000 AS kafka_ts_ms, hex(payload) AS payload_hex, "
        "if(known = 1, original_bytes, toUInt64(length(payload))) AS payload_bytes, "
        "if(known = 1, original_sha256, lower(hex(SHA256(payload)))) AS payload_sha256 "
        f"FROM ({_DEDUPLICATED_DEAD_LETTERS}) AS letters ANY LEFT JOIN ("
        "SELECT topic, partition, offset, toUInt8(1) AS known, "
        "any(payload_bytes) AS original_bytes, any(payload_sha256) AS original_sha256 "
        f"FROM {DEAD_LETTER_ORIGINAL_TABLE} GROUP BY topic, partition, offset"
        f") AS originals USING (topic, partition, offset) {where} "
        f"ORDER BY topic, partition, offset LIMIT {int(limit)}"
    )
    return [
        StoredDeadLetter(
            reason=_text(reason),
            detail=_text(detail),
            topic=_text(row_topic),
            partition=int(partition),
            offset=int(offset),
            kafka_ts_ms=int(kafka_ts_ms),
            payload=bytes.fromhex(str(payload_hex)),
            payload_bytes=int(payload_bytes),
            payload_sha256=_text(payload_sha256),
        )
        for (
            reason,
            detail,
            row_topic,
            partition,
            offset,
            kafka_ts_ms,
            payload_hex,
            payload_bytes,
            payload_sha256,
        ) in result.rows
    ]


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def credited_rows(backend: Backend, model: str | None = None) -> list[dict[str, Any]]:
    """Credited-conversion rows as readers see them (``credited_conversions_current``: each
    credit once, under its declared campaign, with the profit its margin gives), as dicts
    with ``model``, ``conversion_event_id``, ``campaign_id``, ``channel``,
    ``touch_event_id``, ``share_micros``, ``revenue_micros`` and ``profit_micros``."""
    where = f"WHERE model = {sql_string(model)}" if model is not None else ""
    result = backend.query(
        "SELECT model, conversion_event_id, campaign_id, channel, touch_event_id, "
        f"share_micros, revenue_micros, profit_micros FROM {CREDIT_VIEW} {where} "
        "ORDER BY model, conversion_event_id, touch_event_id"
    )
    return result.dicts()
