"""The small interfaces between the pure core and the I/O packages.

``sinks`` (ClickHouse) never imports ``streams`` (Kafka), and of ``streams`` only the
composition root imports ``sinks``, to wire one to the other (the modules
``tests/unit/test_boundaries.py`` names: the CLI, ``run``, ``demo``, ``bench``). Everything
else meets here: the worker writes through :class:`SnapshotSink`, whatever implements it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "CampaignRow",
    "CreditRow",
    "DeadLetterRow",
    "ForwardingSink",
    "KpiSnapshot",
    "RawEventRow",
    "SinkUnavailable",
    "SkippedEventRow",
    "SnapshotSink",
    "WatermarkRow",
]


@dataclass(slots=True)
class KpiSnapshot:
    """The whole state of one (campaign, channel, pane or window) at one version.

    ``version`` grows with the events the snapshot includes (and once more when the window
    turns final), so writing the same snapshot twice, or an older one after a newer, changes
    nothing in a ReplacingMergeTree.

    The worker writes panes (``pipeline.panes``): ``window_kind`` is ``tumbling`` for a pane
    that is a configured tumbling window, ``pane`` for one that is only a hopping window's
    step. A pane that hopping windows are composed of names their sizes
    (``hopping_seconds``) and carries its reach sketch: its users' hashes while exact
    (``reach_users``) and the registers it sets (``reach_codes``, see ``pipeline.hll``).
    """

    campaign_id: str
    channel: str
    window_kind: str  # "tumbling" or "hopping"
    window_seconds: int
    window_start_ms: int
    window_end_ms: int
    is_final: bool
    version: int
    counters: Mapping[str, int]
    hopping_seconds: tuple[int, ...] = ()
    reach_users: tuple[int, ...] = ()
    reach_codes: tuple[int, ...] = ()


@dataclass(slots=True)
class WatermarkRow:
    """How far one stage-two partition has finalised: every pane of it that ends at or
    before ``watermark_ms`` has been written as final. Readers take the lowest over the
    ``partitions`` stage-two partitions, once each has written one, to decide which
    composed (hopping) windows are final."""

    partition: int
    partitions: int
    watermark_ms: int


@dataclass(slots=True)
class DeadLetterRow:
    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    kafka_ts_ms: int
    payload: bytes


@dataclass(slots=True)
class CreditRow:
    """One touch's share of one conversion under one model (``profit_micros`` -1: unknown)."""

    conversion_event_id: str
    order_id: str
    user_id: str
    conversion_ms: int
    model: str
    campaign_id: str
    channel: str
    touch_event_id: str
    touch_type: str
    touch_ms: int
    share_micros: int
    revenue_micros: int
    profit_micros: int


@dataclass(frozen=True, slots=True)
class CampaignRow:
    """One campaign record (``campaign.meta``) as the reader views use it.

    ``campaign_key`` is the id's key (trimmed, lower case) and ``utm_campaign`` the tag's
    key ("" when none); ``campaign_id`` is the id as declared. ``margin_ppm`` is the default
    margin in millionths, ``budget_micros`` the budget in base-currency micro-units, and
    ``starts_ms``/``ends_ms`` epoch milliseconds: -1 each when the record has none.
    ``budget``/``currency`` are the budget as declared (0 and "" when none).
    """

    campaign_key: str
    campaign_id: str
    name: str
    utm_campaign: str
    margin_ppm: int
    budget: float
    currency: str
    budget_micros: int
    starts_ms: int
    ends_ms: int
    event_id: str
    event_ms: int


@dataclass(slots=True)
class RawEventRow:
    """An accepted ingest event as received, for the raw archive."""

    event_id: str
    topic: str
    event_type: str
    event_ms: int
    campaign_id: str
    channel: str
    user_id: str
    payload: bytes


@dataclass(slots=True)
class SkippedEventRow:
    """An event stage one skipped: ``reason`` is ``late`` (behind ``watermark_ms``, its
    source partition's watermark) or ``duplicate`` (``watermark_ms`` 0). ``campaign_id``
    and ``channel`` are what the event counts for before attribution
    (:func:`pipeline.ingest.route_campaign`)."""

    reason: str
    topic: str
    partition: int
    offset: int
    event_id: str
    event_type: str
    event_ms: int
    campaign_id: str
    channel: str
    watermark_ms: int


class SinkUnavailable(Exception):
    """The store cannot take writes now; retry the same batch after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SnapshotSink(Protocol):
    """Where KPI snapshots go. ``flush`` returns only once every added row is durable."""

    async def start(self) -> None: ...

    def add_snapshots(self, rows: Sequence[KpiSnapshot]) -> None: ...

    def add_dead_letters(self, rows: Sequence[DeadLetterRow]) -> None: ...

    def add_credits(self, rows: Sequence[CreditRow]) -> None: ...

    def add_raw_events(self, rows: Sequence[RawEventRow]) -> None: ...

    def add_skipped_events(self, rows: Sequence[SkippedEventRow]) -> None: ...

    def add_campaigns(self, rows: Sequence[CampaignRow]) -> None: ...

    def add_watermarks(self, rows: Sequence[WatermarkRow]) -> None: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


class ForwardingSink:
    """A ``SnapshotSink`` that hands everything to ``inner``: subclass it to watch or hold
    some calls (the demo's live table, a test's hanging store) and every other method of the
    port, including one added later, still reaches the real sink."""

    def __init__(self, inner: SnapshotSink) -> None:
        self._inner = inner

    async def start(self) -> None:
        await self._inner.start()

    def add_snapshots(self, rows: Sequence[KpiSnapshot]) -> None:
        self._inner.add_snapshots(rows)

    def add_dead_letters(self, rows: Sequence[DeadLetterRow]) -> None:
        self._inner.add_dead_letters(rows)

    def add_credits(self, rows: Sequence[CreditRow]) -> None:
        self._inner.add_credits(rows)

    def add_raw_events(self, rows: Sequence[RawEventRow]) -> None:
        self._inner.add_raw_events(rows)

    def add_skipped_events(self, rows: Sequence[SkippedEventRow]) -> None:
        self._inner.add_skipped_events(rows)

    def add_campaigns(self, rows: Sequence[CampaignRow]) -> None:
        self._inner.add_campaigns(rows)

    def add_watermarks(self, rows: Sequence[WatermarkRow]) -> None:
        self._inner.add_watermarks(rows)

    async def flush(self) -> None:
        await self._inner.flush()

    async def close(self) -> None:
        await self._inner.close()
