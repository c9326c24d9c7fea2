"""The raw archive keeps accepted events by (topic, event id) and drops whole months once
they are past the retention, on both engines."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.ports import RawEventRow
from sinks import apply_migrations
from sinks.backends import Backend
from sinks.retention import prune_raw_events
from sinks.tables import RAW_COLUMNS, RAW_TABLE, raw_row

pytestmark = pytest.mark.integration


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_prune_drops_only_months_wholly_past_the_retention(engine_backend: Backend) -> None:
    apply_migrations(engine_backend)
    events = [
        RawEventRow(f"e{i}", "social", "like", ms(when), "c", "x", "u", b'{"raw": 1}')
        for i, when in enumerate(["2025-01-15T00:00:00+00:00", "2026-10-02T00:00:00+00:00",
                                  "2026-11-29T00:00:00+00:00", "2026-11-29T00:00:00+00:00"])
    ]
    rows = [raw_row(e, 0) for e in events]
    engine_backend.insert(RAW_TABLE, RAW_COLUMNS, rows + rows[:1])  # a replayed event too
    count = "SELECT count() FROM (SELECT DISTINCT topic, event_id FROM raw_events)"
    assert engine_backend.query(count).rows[0][0] == 4
    now = datetime(2026, 11, 30, tzinfo=UTC).timestamp()
    assert prune_raw_events(engine_backend, 0, now) == []
    assert prune_raw_events(engine_backend, 30, now) == [202501]  # cutoff 2026-10-31
    assert engine_backend.query(count).rows[0][0] == 3
    assert prune_raw_events(engine_backend, 30, now) == []
    payload = engine_backend.query("SELECT any(payload) FROM raw_events").rows[0][0]
    assert payload in (b'{"raw": 1}', '{"raw": 1}')
