"""From the core's rows to table rows: exact mapping, early refusal of unstorable rows."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from pipeline.kpi import KPI_COUNTERS, KpiValues
from pipeline.ports import DeadLetterRow, KpiSnapshot
from sinks.tables import (
    DEAD_LETTER_COLUMNS,
    DEAD_LETTER_ORIGINAL_COLUMNS,
    KPI_COLUMNS,
    RowError,
    dead_letter_original_row,
    dead_letter_row,
    snapshot_row,
)

SNAPSHOT = KpiSnapshot(
    campaign_id="spring-sale",
    channel="instagram",
    window_kind="tumbling",
    window_seconds=3600,
    window_start_ms=1_700_000_000_000 - 1_700_000_000_000 % 3_600_000,
    window_end_ms=1_700_000_000_000 - 1_700_000_000_000 % 3_600_000 + 3_600_000,
    is_final=True,
    version=42,
    counters={"impressions": 1000, "clicks": 17, "revenue_micros": 12_340_000},
)


def test_snapshot_row_maps_every_column() -> None:
    row = dict(zip(KPI_COLUMNS, snapshot_row(SNAPSHOT, updated_at=1_700_000_123), strict=True))
    assert row["campaign_id"] == "spring-sale"
    assert row["window_start"] == 1_699_999_200
    assert row["window_end"] == 1_700_002_800
    assert (row["is_final"], row["version"], row["updated_at"]) == (1, 42, 1_700_000_123)
    assert row["impressions"] == 1000 and row["revenue_micros"] == 12_340_000
    untouched = set(KPI_COUNTERS) - {"impressions", "clicks", "revenue_micros"}
    assert {row[name] for name in untouched} == {0}


def test_counters_in_catalogue_order_give_the_same_row_as_counters_by_name() -> None:
    ordered = KpiValues([SNAPSHOT.counters.get(name, 0) for name in KPI_COUNTERS])
    assert ordered == SNAPSHOT.counters | {n: 0 for n in KPI_COUNTERS if n not in SNAPSHOT.counters}
    assert ordered["clicks"] == 17 and len(ordered) == len(KPI_COUNTERS)
    with pytest.raises(KeyError):
        ordered["nonsense"]
    same = dataclasses.replace(SNAPSHOT, counters=ordered)
    assert snapshot_row(same, 5) == snapshot_row(SNAPSHOT, 5)
    too_big = ordered.ordered.copy()
    too_big[KPI_COUNTERS.index("revenue_micros")] = 2**63
    with pytest.raises(RowError, match="revenue_micros"):
        snapshot_row(dataclasses.replace(SNAPSHOT, counters=KpiValues(too_big)), 0)
    with pytest.raises(ValueError, match="KPI counters"):
        KpiValues([1, 2, 3])


def test_the_same_snapshot_maps_to_the_same_row() -> None:
    assert snapshot_row(SNAPSHOT, 5) == snapshot_row(dataclasses.replace(SNAPSHOT), 5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"counters": {"impresions": 1}}, "unknown KPI counter"),
        ({"window_kind": "sliding"}, "window_kind"),
        ({"window_start_ms": 1_500}, "not a whole second"),
        ({"window_end_ms": -1000}, "window_end_ms"),
        ({"version": -1}, "version"),
        ({"version": 2**64}, "version"),
        ({"counters": {"clicks": 2**63}}, "clicks"),
        ({"counters": {"clicks": 1.5}}, "clicks must be an int"),
        ({"window_seconds": True}, "window_seconds must be an int"),
    ],
)
def test_unstorable_snapshots_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(RowError, match=message):
        snapshot_row(dataclasses.replace(SNAPSHOT, **change), 0)  # type: ignore[arg-type]


LETTER = DeadLetterRow(
    reason="invalid_json",
    detail="Expecting value: line 1 column 1",
    topic="social.interactions",
    partition=3,
    offset=2**40,
    kafka_ts_ms=1_700_000_000_999,
    payload=b"\xff\xfe{not json\x00",
)


def test_dead_letter_row_keeps_the_bytes() -> None:
    row = dict(zip(DEAD_LETTER_COLUMNS, dead_letter_row(LETTER, 77), strict=True))
    assert row == {
        "received_at": 77,
        "reason": "invalid_json",
        "detail": "Expecting value: line 1 column 1",
        "topic": "social.interactions",
        "partition": 3,
        "offset": 2**40,
        "kafka_ts": 1_700_000_000,
        "payload": b"\xff\xfe{not json\x00",
    }


def test_an_oversize_payload_is_stored_as_a_prefix_with_its_length_and_digest() -> None:
    payload = b"\x00" + bytes(range(256)) * 300  # 76,801 bytes
    letter = dataclasses.replace(LETTER, payload=payload)
    row = dead_letter_row(letter, 5)
    assert row[DEAD_LETTER_COLUMNS.index("payload")] == payload[:65536]
    original = dict(
        zip(DEAD_LETTER_ORIGINAL_COLUMNS, dead_letter_original_row(letter, 5), strict=True)
    )
    assert original == {
        "received_at": 5,
        "topic": "social.interactions",
        "partition": 3,
        "offset": 2**40,
        "payload_bytes": 76_801,
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }


def test_a_missing_kafka_timestamp_is_stored_as_epoch() -> None:
    row = dead_letter_row(dataclasses.replace(LETTER, kafka_ts_ms=-1), 0)
    assert row[DEAD_LETTER_COLUMNS.index("kafka_ts")] == 0


def test_negative_offsets_are_refused() -> None:
    with pytest.raises(RowError, match="offset"):
        dead_letter_row(dataclasses.replace(LETTER, offset=-1), 0)
