"""Table names, column orders and the mapping from the core's rows to table rows.

The mapping is pure and checks every value against its column type, so a row that could not
be inserted is refused when it is added to the writer (:class:`RowError`), never at flush time
where it would block every later row.
"""

from __future__ import annotations

import hashlib
from typing import Final

from pipeline.kpi import KPI_COUNTERS, KpiValues
from pipeline.ports import (
    CampaignRow,
    CreditRow,
    DeadLetterRow,
    KpiSnapshot,
    RawEventRow,
    SkippedEventRow,
    WatermarkRow,
)
from sinks.errors import SinkError

__all__ = [
    "CAMPAIGN_COLUMNS",
    "CAMPAIGN_TABLE",
    "CREDIT_COLUMNS",
    "CREDIT_TABLE",
    "CREDIT_VIEW",
    "DEAD_LETTER_COLUMNS",
    "DEAD_LETTER_ORIGINAL_COLUMNS",
    "DEAD_LETTER_ORIGINAL_TABLE",
    "DEAD_LETTER_PREFIX_BYTES",
    "DEAD_LETTER_TABLE",
    "KPI_COLUMNS",
    "KPI_TABLE",
    "KPI_VIEW",
    "RAW_COLUMNS",
    "RAW_TABLE",
    "SKIPPED_COLUMNS",
    "SKIPPED_TABLE",
    "SKIPPED_VIEW",
    "WATERMARK_COLUMNS",
    "WATERMARK_TABLE",
    "WINDOW_KINDS",
    "WRITTEN_COLUMNS",
    "RowError",
    "campaign_row",
    "credit_row",
    "dead_letter_original_row",
    "dead_letter_row",
    "raw_row",
    "snapshot_row",
    "watermark_row",
]

# The worker writes panes; the view composes the windows readers see (migration 0008).
KPI_TABLE: Final = "kpi_panes"
KPI_VIEW: Final = "kpi_current"
WATERMARK_TABLE: Final = "kpi_watermarks"
WATERMARK_COLUMNS: Final[tuple[str, ...]] = (
    "partition",
    "partitions",
    "watermark_ms",
    "updated_at",
)
DEAD_LETTER_TABLE: Final = "dead_letters"
CAMPAIGN_TABLE: Final = "campaigns"
CAMPAIGN_COLUMNS: Final[tuple[str, ...]] = (
    "campaign_key",
    "campaign_id",
    "name",
    "utm_campaign",
    "margin_ppm",
    "budget",
    "currency",
    "budget_micros",
    "starts_ms",
    "ends_ms",
    "event_id",
    "event_time_ms",
    "written_at",
)
DEAD_LETTER_ORIGINAL_TABLE: Final = "dead_letter_originals"
# dead_letters.payload keeps this much of the original; the dead-letter topic keeps it all
# (migration 0009).
DEAD_LETTER_PREFIX_BYTES: Final = 65536
CREDIT_TABLE: Final = "credited_conversions"
# Credits under their declared campaign, with the declared margins applied (migration 0013).
CREDIT_VIEW: Final = "credited_conversions_current"
RAW_TABLE: Final = "raw_events"
RAW_COLUMNS: Final[tuple[str, ...]] = (
    "event_id",
    "topic",
    "event_type",
    "event_time",
    "campaign_id",
    "channel",
    "user_id",
    "payload",
    "ingested_at",
)
SKIPPED_TABLE: Final = "skipped_events"
SKIPPED_COLUMNS: Final[tuple[str, ...]] = (
    "skipped_at",
    "reason",
    "topic",
    "partition",
    "offset",
    "event_id",
    "event_type",
    "event_time",
    "campaign_id",
    "channel",
    "watermark",
)
# Late and duplicate events per day, campaign key, channel and topic (migration 0014).
SKIPPED_VIEW: Final = "skipped_daily"
# Hopping windows are never written: the view composes them from their panes.
WINDOW_KINDS: Final = frozenset({"tumbling", "pane"})

KPI_COLUMNS: Final[tuple[str, ...]] = (
    "campaign_id",
    "channel",
    "window_kind",
    "window_seconds",
    "window_start",
    "window_end",
    "is_final",
    "version",
    *KPI_COUNTERS,
    "hopping_seconds",
    "reach_users",
    "reach_codes",
    "updated_at",
)
DEAD_LETTER_COLUMNS: Final[tuple[str, ...]] = (
    "received_at",
    "reason",
    "detail",
    "topic",
    "partition",
    "offset",
    "kafka_ts",
    "payload",
)
DEAD_LETTER_ORIGINAL_COLUMNS: Final[tuple[str, ...]] = (
    "received_at",
    "topic",
    "partition",
    "offset",
    "payload_bytes",
    "payload_sha256",
)

CREDIT_COLUMNS: Final[tuple[str, ...]] = (
    "conversion_event_id",
    "order_id",
    "user_id",
    "conversion_time",
    "model",
    "campaign_id",
    "channel",
    "touch_event_id",
    "touch_type",
    "touch_time",
    "share_micros",
    "revenue_micros",
    "profit_micros",
    "version",
    "unmargined_revenue_micros",
)

WRITTEN_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    KPI_TABLE: KPI_COLUMNS,
    DEAD_LETTER_TABLE: DEAD_LETTER_COLUMNS,
    DEAD_LETTER_ORIGINAL_TABLE: DEAD_LETTER_ORIGINAL_COLUMNS,
    CREDIT_TABLE: CREDIT_COLUMNS,
    RAW_TABLE: RAW_COLUMNS,
    SKIPPED_TABLE: SKIPPED_COLUMNS,
    CAMPAIGN_TABLE: CAMPAIGN_COLUMNS,
    # Last: a watermark says that partition's final panes are written, so it is written
    # after them (the writer flushes tables in this order).
    WATERMARK_TABLE: WATERMARK_COLUMNS,
}
"""Every table the writer inserts into, with the columns it names (a test compares each
with the table's ``DESCRIBE`` after every migration, on every engine)."""

_INT64 = (-(2**63), 2**63 - 1)
_UINT64 = (0, 2**64 - 1)
_UINT32 = (0, 2**32 - 1)
_KNOWN_COUNTERS = frozenset(KPI_COUNTERS)


class RowError(SinkError, ValueError):
    """A row cannot be stored as given (unknown counter, value out of its column's range)."""


def _checked(name: str, value: int, bounds: tuple[int, int]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RowError(f"{name} must be an int, not {value!r}")
    if not bounds[0] <= value <= bounds[1]:
        raise RowError(f"{name}={value} is outside {bounds[0]}..{bounds[1]}")
    return value


def _window_second(name: str, millis: int) -> int:
    _checked(name, millis, (0, _UINT32[1] * 1000))
    if millis % 1000:
        # Windows are whole seconds; truncating would merge two distinct windows' keys.
        raise RowError(f"{name}={millis} is not a whole second")
    return millis // 1000


def snapshot_row(snapshot: KpiSnapshot, updated_at: int) -> tuple[object, ...]:
    """``snapshot`` (a pane) as a ``kpi_panes`` row in :data:`KPI_COLUMNS` order.

    Counters missing from the snapshot are 0; an unknown counter name is a :class:`RowError`
    (it would otherwise be dropped silently). Window bounds go from epoch ms to DateTime
    seconds (UTC).
    """
    counters = snapshot.counters
    low, high = _INT64
    if type(counters) is KpiValues:  # the worker's panes: every counter, in row order
        # ints by construction (sums of integer deltas): only the range is checked here
        values = counters.ordered
        if not (low <= min(values) and max(values) <= high):
            for name, value in zip(KPI_COUNTERS, values, strict=True):
                _checked(name, value, _INT64)
    else:
        if not _KNOWN_COUNTERS.issuperset(counters):
            unknown = sorted(set(counters) - _KNOWN_COUNTERS)
            raise RowError(f"unknown KPI counter(s): {', '.join(unknown)}")
        get = counters.get
        values = [get(name, 0) for name in KPI_COUNTERS]
        for name, value in zip(KPI_COUNTERS, values, strict=True):
            if type(value) is not int or not low <= value <= high:  # one check per value
                _checked(name, value, _INT64)
    if snapshot.window_kind not in WINDOW_KINDS:
        raise RowError(
            f"window_kind must be tumbling or pane, not {snapshot.window_kind!r} "
            "(hopping windows are composed from panes by the views)"
        )
    return (
        snapshot.campaign_id,
        snapshot.channel,
        snapshot.window_kind,
        _checked("window_seconds", snapshot.window_seconds, _UINT32),
        _window_second("window_start_ms", snapshot.window_start_ms),
        _window_second("window_end_ms", snapshot.window_end_ms),
        1 if snapshot.is_final else 0,
        _checked("version", snapshot.version, _UINT64),
        *values,
        snapshot.hopping_seconds,
        snapshot.reach_users,
        snapshot.reach_codes,
        updated_at,
    )


def watermark_row(mark: WatermarkRow, updated_at: int) -> tuple[object, ...]:
    """``mark`` as a ``kpi_watermarks`` row in :data:`WATERMARK_COLUMNS` order."""
    return (
        _checked("partition", mark.partition, (0, 2**16 - 1)),
        _checked("partitions", mark.partitions, (1, 2**16 - 1)),
        _checked("watermark_ms", mark.watermark_ms, _UINT64),
        updated_at,
    )


def dead_letter_row(letter: DeadLetterRow, received_at: int) -> tuple[object, ...]:
    """``letter`` as a ``dead_letters`` row in :data:`DEAD_LETTER_COLUMNS` order.

    The payload's first :data:`DEAD_LETTER_PREFIX_BYTES` bytes are stored unchanged (its
    length and digest go to :func:`dead_letter_original_row`). A Kafka timestamp outside
    DateTime's range (Kafka uses -1 for "none") is stored as 0 (1970-01-01).
    """
    kafka_seconds = letter.kafka_ts_ms // 1000
    if not _UINT32[0] <= kafka_seconds <= _UINT32[1]:
        kafka_seconds = 0
    return (
        received_at,
        letter.reason,
        letter.detail,
        letter.topic,
        _checked("partition", letter.partition, _UINT32),
        _checked("offset", letter.offset, _UINT64),
        kafka_seconds,
        bytes(letter.payload[:DEAD_LETTER_PREFIX_BYTES]),
    )


def dead_letter_original_row(letter: DeadLetterRow, received_at: int) -> tuple[object, ...]:
    """The length and SHA-256 of ``letter``'s whole payload, as a ``dead_letter_originals``
    row in :data:`DEAD_LETTER_ORIGINAL_COLUMNS` order."""
    return (
        received_at,
        letter.topic,
        _checked("partition", letter.partition, _UINT32),
        _checked("offset", letter.offset, _UINT64),
        len(letter.payload),
        hashlib.sha256(letter.payload).hexdigest(),
    )


def credit_row(credit: CreditRow) -> tuple[object, ...]:
    """``credit`` as a ``credited_conversions`` row in :data:`CREDIT_COLUMNS` order.

    The same credit always maps to the same row (version 1), so re-writing it after a replay
    changes nothing. An unknown profit (-1: the conversion has no margin of its own) is
    stored as 0, with the revenue in ``unmargined_revenue_micros``, to which the reader view
    applies the credited campaign's declared margin (migration 0013).
    """
    unmargined = credit.profit_micros < 0
    return (
        credit.conversion_event_id,
        credit.order_id,
        credit.user_id,
        _checked("conversion_ms", credit.conversion_ms, (0, _UINT32[1] * 1000)) // 1000,
        credit.model,
        credit.campaign_id,
        credit.channel,
        credit.touch_event_id,
        credit.touch_type,
        _checked("touch_ms", credit.touch_ms, (0, _UINT32[1] * 1000)) // 1000,
        _checked("share_micros", credit.share_micros, _INT64),
        _checked("revenue_micros", credit.revenue_micros, _INT64),
        max(0, _checked("profit_micros", credit.profit_micros, _INT64)),
        1,
        credit.revenue_micros if unmargined else 0,
    )


def raw_row(event: RawEventRow, ingested_at: int) -> tuple[object, ...]:
    """``event`` as a ``raw_events`` row in :data:`RAW_COLUMNS` order (payload unchanged)."""
    return (
        event.event_id,
        event.topic,
        event.event_type,
        _checked("event_ms", event.event_ms, (0, _UINT32[1] * 1000)) // 1000,
        event.campaign_id,
        event.channel,
        event.user_id,
        bytes(event.payload),
        ingested_at,
    )


def skipped_row(event: SkippedEventRow, skipped_at: int) -> tuple[object, ...]:
    """``event`` as a ``skipped_events`` row in :data:`SKIPPED_COLUMNS` order."""
    seconds = (0, _UINT32[1] * 1000)
    return (
        skipped_at,
        event.reason,
        event.topic,
        _checked("partition", event.partition, _UINT32),
        _checked("offset", event.offset, _UINT64),
        event.event_id,
        event.event_type,
        _checked("event_ms", event.event_ms, seconds) // 1000,
        event.campaign_id,
        event.channel,
        _checked("watermark_ms", max(0, event.watermark_ms), seconds) // 1000,
    )


def campaign_row(record: CampaignRow, written_at: int) -> tuple[object, ...]:
    """``record`` as a ``campaigns`` row in :data:`CAMPAIGN_COLUMNS` order (one row per
    record: the views take each campaign's newest; a replayed record is the same row)."""
    return (
        record.campaign_key,
        record.campaign_id,
        record.name,
        record.utm_campaign,
        _checked("margin_ppm", record.margin_ppm, (-1, 1_000_000)),
        float(record.budget),
        record.currency,
        _checked("budget_micros", record.budget_micros, _INT64),
        _checked("starts_ms", record.starts_ms, _INT64),
        _checked("ends_ms", record.ends_ms, _INT64),
        record.event_id,
        _checked("event_time_ms", record.event_ms, _INT64),
        written_at,
    )
