"""Stage one forgets the touches of users who never convert once no conversion can reach
them, from its in-memory expiry index or, after a restart, from the index rebuilt from the
stored state; attribution within the lookback is unchanged."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from pipeline import ingest as ingest_module
from pipeline.contract import Contract
from pipeline.ingest import ServiceCosts
from pipeline.kpi import MICROS
from pipeline.money import Rates
from pipeline.partitioning import partition_for
from pipeline.stage_one import Ingestor, Message, Release

T0 = int(datetime(2026, 9, 21, tzinfo=UTC).timestamp() * 1000)
NOW = T0 + 30 * 86_400_000
MIN = 60_000
HOUR = 3_600_000
SOCIAL, WEB = "social.interactions", "web.events"


@pytest.fixture(autouse=True)
def _few_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    # The horizon follows the oldest kept checkpoint: keep few, so it moves within a test.
    monkeypatch.setattr(ingest_module, "_KEEP_CHECKPOINTS", 2)


class Store(dict[str, Any]):
    def __init__(self) -> None:
        super().__init__()
        self.writes: dict[str, Any] = {}

    def put(self, key: str, value: Any) -> None:
        self[key] = self.writes[key] = orjson.loads(orjson.dumps(value))

    def delete(self, key: str) -> None:
        self.pop(key, None)
        self.writes[key] = None


def make_ingestor() -> Ingestor:
    return Ingestor(
        Contract(max_message_bytes=65536, max_future_skew_ms=300_000),
        Rates("EUR", {"USD": Decimal("0.92")}),
        ServiceCosts(6 * MICROS, 2 * MICROS),
        30.0,
        MIN,
        lookback_ms=2 * HOUR,
    )


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def like(event_id: str, user: str, ms: int) -> tuple[str, dict[str, Any]]:
    return SOCIAL, {
        "event_id": event_id,
        "event_type": "like",
        "event_time": _iso(ms),
        "campaign_id": "cmp-1",
        "channel": "FB",
        "user_id": user,
    }


def page_view(event_id: str, ms: int) -> tuple[str, dict[str, Any]]:
    return WEB, {
        "event_id": event_id,
        "event_type": "page_view",
        "event_time": _iso(ms),
        "user_id": "u-browse",
        "url": "https://shop.example/",
    }


def conversion(event_id: str, user: str, ms: int) -> tuple[str, dict[str, Any]]:
    return WEB, {
        "event_id": event_id,
        "event_type": "conversion",
        "event_time": _iso(ms),
        "user_id": user,
        "order_id": f"o-{event_id}",
        "revenue": 10.0,
        "currency": "EUR",
    }


class Partition:
    """Partition 0 of both traffic topics, fed one batch at a time."""

    def __init__(self, ingestor: Ingestor, store: Store | None = None) -> None:
        self.ingestor = ingestor
        self.store = store if store is not None else Store()
        self.offsets: dict[str, int] = defaultdict(int)

    def batch(self, *events: tuple[str, dict[str, Any]]) -> Release:
        by_kind: dict[str, list[Message]] = defaultdict(list)
        for kind, body in events:
            by_kind[kind].append(Message(self.offsets[kind], orjson.dumps(body)))
            self.offsets[kind] += 1
        self.store.writes = {}
        for kind, messages in by_kind.items():
            result = self.ingestor.run(kind, 0, messages, self.store, NOW)
            assert not result.rejected and not result.late, (result.rejected, result.late)
        return self.ingestor.release(0, self.store)

    def tick(self, ms: int, *events: tuple[str, dict[str, Any]]) -> Release:
        """A batch moving both clocks to ``ms``, with ``events``."""
        return self.batch(like(f"tick-{ms}", "u-tick", ms), page_view(f"pv-{ms}", ms), *events)


def times(part: Partition, user: str) -> list[int] | None:
    touches = part.store.get(f"user|{user}")
    return None if touches is None else [t[0] for t in touches]


def test_touches_of_a_user_who_never_converts_are_dropped_after_the_lookback() -> None:
    part = Partition(make_ingestor())
    part.tick(T0, like("a1", "u-gone", T0 + 10 * MIN), like("b1", "u-back", T0 + 10 * MIN))
    deleted_at = None
    for step in range(1, 13):  # every half hour, to six hours
        at = T0 + step * HOUR // 2
        extra = [like("b2", "u-back", at)] if at == T0 + 3 * HOUR else []
        part.tick(at, *extra)
        if times(part, "u-gone") is None and deleted_at is None:
            deleted_at = at
            assert part.store.writes["user|u-gone"] is None  # a tombstone in the changelog
    # Its hour ends at T0 + 1h: gone once the oldest checkpoint's watermark passes 1h plus
    # the lookback, not before.
    assert deleted_at is not None and T0 + 3 * HOUR <= deleted_at <= T0 + 4 * HOUR
    assert times(part, "u-back") == [T0 + 3 * HOUR]  # the newer touch is kept...
    for step in range(13, 17):
        part.tick(T0 + step * HOUR // 2)
    assert times(part, "u-back") is None  # ...until it expires too
    ticks = times(part, "u-tick") or []
    assert ticks[-1] == T0 + 8 * HOUR and ticks[0] >= T0 + 8 * HOUR - 3 * HOUR  # bounded


def test_after_a_restart_the_index_is_rebuilt_from_the_stored_touches() -> None:
    part = Partition(make_ingestor())
    part.tick(T0, like("a1", "u-gone", T0 + 10 * MIN), like("b1", "u-back", T0 + 10 * MIN))
    part.tick(T0 + HOUR, like("b2", "u-back", T0 + HOUR + 5 * MIN))
    restarted = Partition(make_ingestor(), part.store)
    restarted.offsets = part.offsets
    assert restarted.ingestor.index_touches(0, list(part.store.items())) == 3
    without_index = Partition(make_ingestor(), Store())
    without_index.store.update(orjson.loads(orjson.dumps(part.store)))
    without_index.offsets = defaultdict(int, part.offsets)
    for step in range(3, 11):
        at = T0 + step * HOUR // 2
        restarted.tick(at)
        without_index.tick(at)
    assert times(restarted, "u-gone") is None
    assert times(restarted, "u-back") is None  # its newest touch's hour was indexed
    assert times(without_index, "u-gone") == [T0 + 10 * MIN]  # what the index is for


def test_index_touches_skips_users_of_other_partitions_and_other_keys() -> None:
    users = [f"u-{i}" for i in range(40)]
    mine = [u for u in users if partition_for(u.encode(), 4) == 2]
    items = [(f"user|{u}", [[T0, "cmp-1", "facebook", "like", "e", "s", 0]]) for u in users]
    items += [("clock|web.events:2", [[0, T0]]), ("user|u-empty", [])]
    ingestor = make_ingestor()
    assert 0 < ingestor.index_touches(2, items, partitions=4) == len(mine)
    assert ingestor.index_touches(2, items) == len(users)


def test_a_conversion_within_the_lookback_is_still_credited_with_its_touches() -> None:
    part = Partition(make_ingestor())
    part.tick(T0, like("t1", "u-buy", T0 + 10 * MIN), like("x1", "u-other", T0 + 10 * MIN))
    credited: list[Any] = []
    for step in range(1, 13):
        at = T0 + step * HOUR // 2
        extra = [conversion("c1", "u-buy", at)] if at == T0 + 2 * HOUR else []
        credited += part.tick(at, *extra).rows
    assert {(r.conversion_event_id, r.touch_event_id) for r in credited} == {("c1", "t1")}
    assert {r.model for r in credited} >= {"last_touch", "linear"}
    assert times(part, "u-buy") is None and times(part, "u-other") is None  # then pruned
