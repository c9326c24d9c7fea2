"""Stage one, per partition number: validate, lateness, de-duplication, touchpoints, and
attribution of conversions. Pure: state lives behind a ``StateStore`` the caller persists.

Everything a partition number ``p`` needs is stored under keys of that partition (the
ingest topics are co-partitioned by user), so the worker writes it to changelog partition
``p``. Every decision is reproducible when a batch is replayed after a crash:

- lateness follows the partition clock's checkpoints (see ``PartitionClock``);
- a duplicate is an ``event_id`` already seen at *another* offset of the partition, so the
  original is not taken for its own duplicate when replayed;
- a conversion is credited only once the watermark of both the social and the web
  partition passed its time: every touch that could still count has arrived by then (a
  later one would be late), so the credit depends on the set of events, not on how Kafka
  interleaved the two topics. Conversions are released in offset order, so stage two can
  skip replays by offset.
"""

from __future__ import annotations

import bisect
import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from pipeline.attribution import Touch, credit_shares, split
from pipeline.contract import Contract, Event, Rejection, RejectReason
from pipeline.ingest import (
    NO_TIME,
    Forward,
    PartitionClock,
    ServiceCosts,
    campaign_row,
    contribution,
    route_campaign,
)
from pipeline.kpi import MICROS
from pipeline.money import Rates
from pipeline.partitioning import partition_for
from pipeline.ports import CampaignRow, CreditRow, SkippedEventRow
from pipeline.settings import AttributionModel

__all__ = [
    "WATERMARK_KINDS",
    "IngestResult",
    "Ingestor",
    "Message",
    "Release",
    "StateStore",
    "held_conversions_from",
]

SOCIAL: Final = "social.interactions"
WEB: Final = "web.events"
META: Final = "campaign.meta"
# Topics whose watermarks decide when a KPI window is final.
WATERMARK_KINDS: Final = (SOCIAL, WEB, "campaign.costs")
# Event ids seen are kept per second of event time: each batch rewrites the buckets it
# touched, so a bucket must stay small at a high rate (a minute of 10,000 events/s made one
# changelog message of megabytes, rewritten by every batch).
_BUCKET_MS: Final = 1_000
_ENGAGEMENTS: Final = frozenset({"like", "comment", "share", "save"})
# Users are indexed for expiry by the hour of event time of their touches (see
# ``_ExpiryIndex``): one set per hour rather than a heap entry per touch.
_EXPIRY_BUCKET_MS: Final = 3_600_000


class StateStore(Protocol):
    """Keys and JSON-able values of one partition number.

    A store that persists asynchronously (a changelog) may keep any subset of one batch's
    changes when the process dies (Kafka may even reorder them), but every change of an
    earlier batch: the ingestor never writes a value that is safe only if another key of
    the same batch is written too.
    """

    def get(self, key: str) -> Any | None: ...

    def put(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...


@dataclass(slots=True)
class Message:
    offset: int
    value: bytes | None


@dataclass(slots=True)
class IngestResult:
    """What one source partition's slice of a batch became, in offset order."""

    rejected: list[tuple[int, Rejection]] = field(default_factory=list)
    late: list[tuple[int, Event, int]] = field(default_factory=list)  # offset, event, watermark
    duplicates: list[tuple[int, Event]] = field(default_factory=list)  # offset, event
    accepted: list[tuple[int, Event]] = field(default_factory=list)  # counted, for the archive
    forwards: list[tuple[int, Forward]] = field(default_factory=list)
    campaigns: list[CampaignRow] = field(default_factory=list)  # campaign records accepted
    watermark: int = NO_TIME

    def skipped(self, topic: str, partition: int) -> list[SkippedEventRow]:
        """The late and duplicate events as ``skipped_events`` rows (``topic`` names the
        source)."""
        rows = [_skipped("late", topic, partition, o, e, mark) for o, e, mark in self.late]
        rows += [_skipped("duplicate", topic, partition, o, e, 0) for o, e in self.duplicates]
        return rows


def _skipped(
    reason: str, topic: str, partition: int, offset: int, event: Event, watermark: int
) -> SkippedEventRow:
    campaign, channel = route_campaign(event)
    return SkippedEventRow(
        reason,
        topic,
        partition,
        offset,
        event.event_id,
        event.event_type,
        event.ts_ms,
        campaign,
        channel,
        watermark,
    )


@dataclass(slots=True)
class Release:
    """Conversions credited in one call: stage-two forwards and the per-model rows."""

    src: str
    forwards: list[tuple[int, Forward]] = field(default_factory=list)
    rows: list[CreditRow] = field(default_factory=list)


def clock_key(src: str) -> str:
    return f"clock|{src}"


class Ingestor:
    """Stage one's logic for any partition. Holds configuration, and in memory only an index
    of the users whose touches each partition number stores, by when they expire (rebuilt
    by :meth:`index_touches` after a restart or a rebalance; the state is in the store)."""

    def __init__(
        self,
        contract: Contract,
        rates: Rates,
        service: ServiceCosts,
        staff_hourly_rate: float,
        allowed_lateness_ms: int,
        model: AttributionModel = AttributionModel.LAST_TOUCH,
        lookback_ms: int = 7 * 86_400_000,
        half_life_ms: int = 86_400_000,
        engagements_are_touchpoints: bool = True,
    ) -> None:
        self._contract = contract
        self._rates = rates
        self._service = service
        self._staff_rate = staff_hourly_rate
        self._lateness = allowed_lateness_ms
        self._model = model
        self._lookback = lookback_ms
        self._half_life = half_life_ms
        self._touch_types = {"click", "visit"} | (
            set(_ENGAGEMENTS) if engagements_are_touchpoints else set()
        )
        self._expiry: dict[int, _ExpiryIndex] = defaultdict(_ExpiryIndex)

    def index_touches(
        self, partition: int, items: Iterable[tuple[Any, Any]], partitions: int | None = None
    ) -> int:
        """Rebuild the expiry index of ``partition`` from its stored (key, value) pairs, as
        recovered: after a restart or a rebalance, before the partition's first batch.
        Returns how many users it holds.

        Only ``user|...`` keys count, at their newest touch: pruning at its time drops all
        of them. With ``partitions``, a user whose id is keyed to another partition is
        skipped (an in-memory table's one dict holds every partition's keys, and a user
        must only be pruned at its own partition's horizon).
        """
        index = self._expiry[partition] = _ExpiryIndex()
        for key, touches in items:
            if not isinstance(key, str) or not key.startswith("user|") or not touches:
                continue
            user = key[5:]
            if partitions is not None and partition_for(user.encode(), partitions) != partition:
                continue
            index.add(touches[-1][0], user)  # kept sorted by time: the newest is last
        return len(index)

    # -- per source partition -------------------------------------------------------------
    def run(
        self, kind: str, partition: int, messages: list[Message], store: StateStore, now_ms: int
    ) -> IngestResult:
        """Process consecutive messages of one source partition, ascending offsets.

        Never raises on bad input; updates the partition's state in ``store``.
        """
        result = IngestResult()
        if not messages:
            return result
        src = f"{kind}:{partition}"
        clock = PartitionClock.from_state(store.get(clock_key(src)))
        max_ts = clock.max_before(messages[0].offset)
        seen = _SeenIds(store, src)
        horizon = self._horizon(partition, store)
        for msg in messages:
            decoded = self._contract.decode(kind, msg.value, now_ms)
            if isinstance(decoded, Rejection):
                result.rejected.append((msg.offset, decoded))
                continue
            currency = decoded.data.get("currency")
            if currency and not self._rates.knows(currency):
                result.rejected.append((msg.offset, _unknown_currency(currency)))
                continue
            watermark = max_ts - self._lateness
            max_ts = max(max_ts, decoded.ts_ms)
            if decoded.ts_ms < watermark:
                result.late.append((msg.offset, decoded, watermark))
                continue
            if not seen.first(decoded.event_id, decoded.ts_ms, msg.offset):
                result.duplicates.append((msg.offset, decoded))
                continue
            result.accepted.append((msg.offset, decoded))
            self._remember(decoded, src, msg.offset, partition, store, horizon)
            if kind == META:
                result.campaigns.append(campaign_row(decoded, self._rates))
                continue
            forward = contribution(decoded, self._rates, self._service, self._staff_rate)
            if forward is not None:
                result.forwards.append((msg.offset, forward))
        clock.checkpoint(messages[-1].offset, max_ts)
        store.put(clock_key(src), clock.to_state())
        seen.save(clock.oldest() - self._lateness)
        result.watermark = max_ts - self._lateness
        return result

    def _joint_watermark(self, partition: int, store: StateStore, oldest: bool = False) -> int:
        """Lowest watermark of the social and web partitions ``partition``; with ``oldest``,
        as of their oldest kept checkpoints, where no replay starts before."""
        clocks = [
            PartitionClock.from_state(store.get(clock_key(f"{kind}:{partition}")))
            for kind in (SOCIAL, WEB)
        ]
        least = min(c.oldest() if oldest else c.latest() for c in clocks)
        return least - self._lateness if least > NO_TIME else NO_TIME

    def _horizon(self, partition: int, store: StateStore) -> int:
        """Touches older than this can no longer count for any conversion.

        From the oldest checkpoints, not the newest: after a crash the clocks can be ahead of
        the replay (the batch that moved them kept its clock but not every touch or pending
        conversion), and a conversion still to be replayed may need touches older than the
        newest watermark allows. None is older than the oldest checkpoint's.
        """
        _, pending, _ = _conversions(store, partition)
        joint = self._joint_watermark(partition, store, oldest=True)
        return int(min([joint, *(p[1] for p in pending)])) - self._lookback

    def _remember(
        self,
        event: Event,
        src: str,
        offset: int,
        partition: int,
        store: StateStore,
        horizon: int,
    ) -> None:
        """Keep what attribution needs: touches and follows per user, pending conversions."""
        if not event.user_id:
            return
        etype = event.event_type
        if event.kind == WEB and etype == "conversion":
            released, pending, credited_users = _conversions(store, partition)
            if any(p[0] == offset for p in pending) or offset <= released:
                return  # replayed
            data = event.data
            revenue = self._rates.micros(data["revenue"], data["currency"])
            margin = data.get("margin")
            profit = -1 if margin is None else _profit(revenue, margin)
            pending.append(
                [
                    offset,
                    event.ts_ms,
                    event.user_id,
                    event.event_id,
                    data["order_id"],
                    revenue,
                    profit,
                ]
            )
            pending.sort()
            store.put(_conversions_key(partition), [released, pending, credited_users])
            return
        campaign, channel = route_campaign(event)
        if not campaign:
            return
        touch_type = "visit" if etype == "page_view" else etype
        if touch_type not in self._touch_types and etype not in ("follow", "unfollow"):
            return
        key = f"user|{event.user_id}"
        touches = store.get(key) or []
        # Kept sorted by (time, src, offset): a binary search finds the place, and a replay
        # (the same message again, so the same time) right there. A busy user has hundreds
        # of touches in the lookback; scanning and sorting them for every event made this
        # stage quadratic in a user's activity.
        place = (event.ts_ms, src, offset)
        at = bisect.bisect_left(touches, place, key=_touch_order)
        if at < len(touches) and _touch_order(touches[at]) == place:
            return  # replayed
        touch = [event.ts_ms, campaign, channel, touch_type, event.event_id, src, offset]
        touches.insert(at, touch)
        if touches[0][0] < horizon:
            touches = [t for t in touches if t[0] >= horizon]
        store.put(key, touches)
        self._expiry[partition].add(event.ts_ms, event.user_id)

    # -- per partition number ---------------------------------------------------------------
    def release(self, partition: int, store: StateStore) -> Release:
        """Credit every pending conversion both watermarks have passed, in offset order.

        The touches of the users credited here are pruned by the *next* call, once the
        batch that marked their conversions released is in the changelog: a crash can then
        never replay a conversion against touches already pruned for it.

        Users who never convert are pruned too, once the horizon passes the hour of their
        touches the expiry index noted (every touch in it is then older than the horizon;
        a key left with none is deleted). It is the same horizon, and as safe: a conversion
        still to be credited is pending (the horizon is at least the lookback before each),
        or read later, in a replay (which starts after the newest checkpoint but one of the
        persisted clocks, never before the oldest) or afterwards; if not late, its time is
        at least its web partition's watermark at the oldest checkpoint, so the lookback
        before it ends at or after the horizon. Released ones are never credited again.
        One key gets one value per batch, so a crash keeps either the pruned touches (with
        that batch's new ones) or the earlier state, never a mix.
        """
        src = f"credit:{WEB}:{partition}"
        out = Release(src)
        last, pending, credited_users = _conversions(store, partition)
        expiry = self._expiry.get(partition)
        if not pending and not credited_users and not expiry:
            return out
        horizon = self._horizon(partition, store)
        self._prune_users(store, credited_users, horizon)
        if expiry:
            self._prune_users(store, expiry.due(horizon), horizon)
        if not pending and not credited_users:
            return out
        joint = self._joint_watermark(partition, store)
        released = 0
        for offset, ts, user, event_id, order_id, revenue, profit in pending:
            if ts > joint:
                break  # later offsets wait for this one: stage two skips by offset
            released += 1
            touches = self._touches(store, user, ts)
            forwards, rows = self._credit(ts, user, event_id, order_id, revenue, profit, touches)
            out.forwards += [(offset, f) for f in forwards]
            out.rows += rows
        if released:
            last = pending[released - 1][0]
        if released or credited_users:
            users = sorted({p[2] for p in pending[:released]})
            store.put(_conversions_key(partition), [last, pending[released:], users])
        return out

    def _touches(self, store: StateStore, user: str, ts: int) -> list[Touch]:
        return [
            Touch(t[0], t[1], t[2], t[3], t[4], (t[5], t[6]))
            for t in store.get(f"user|{user}") or []
            if ts - self._lookback <= t[0] <= ts
        ]

    def _credit(
        self,
        ts: int,
        user: str,
        event_id: str,
        order_id: str,
        revenue: int,
        profit: int,
        touches: list[Touch],
    ) -> tuple[list[Forward], list[CreditRow]]:
        follower = _is_follower(touches)
        eligible = [t for t in touches if t.touch_type in self._touch_types]
        rows: list[CreditRow] = []
        for model in AttributionModel:
            shares = credit_shares(eligible, ts, model, self._half_life)
            for touch, share, money, gain in _money(eligible, shares, revenue, profit):
                if share:
                    rows.append(
                        CreditRow(
                            event_id,
                            order_id,
                            user,
                            ts,
                            model.value,
                            touch.campaign_id,
                            touch.channel,
                            touch.event_id,
                            touch.touch_type,
                            touch.ts_ms,
                            share,
                            money,
                            gain,
                        )
                    )
        shares = credit_shares(eligible, ts, self._model, self._half_life)
        merged: dict[tuple[str, str], dict[str, int]] = {}
        if not eligible:  # no touch: the sale counts for no campaign
            merged[("", "direct")] = _credit_deltas(MICROS, revenue, profit, follower)
        for touch, share, money, gain in _money(eligible, shares, revenue, profit):
            if not share:
                continue
            deltas = _credit_deltas(share, money, gain, follower)
            bucket = merged.setdefault((touch.campaign_id, touch.channel), {"events": 1})
            for name, value in deltas.items():
                if name != "events":
                    bucket[name] = bucket.get(name, 0) + value
        forwards = [Forward(c, ch, ts, "", d) for (c, ch), d in sorted(merged.items())]
        return forwards, rows

    def _prune_users(self, store: StateStore, users: Iterable[str], horizon: int) -> None:
        """Drop touches older than ``horizon``: no pending or future conversion reaches them."""
        for user in users:
            key = f"user|{user}"
            touches = store.get(key)
            if touches is None:
                continue
            kept = [t for t in touches if t[0] >= horizon]
            if not kept:
                store.delete(key)
            elif len(kept) != len(touches):
                store.put(key, kept)


class _ExpiryIndex:
    """Users by the end of the hour of event time of touches stored for them, taken out in
    time order once the horizon reaches it: every touch of that hour is then older than the
    horizon. In watermark terms, an hour's users expire a lookback after its end.

    A user touched again sits in the later hour too, so pruning an earlier one keeps the
    newer touches; every stored user is in the (not yet due) hour of its newest touch.
    """

    __slots__ = ("_heap", "_users")

    def __init__(self) -> None:
        self._heap: list[int] = []
        self._users: dict[int, set[str]] = {}

    def add(self, ts: int, user: str) -> None:
        end = (ts // _EXPIRY_BUCKET_MS + 1) * _EXPIRY_BUCKET_MS
        users = self._users.get(end)
        if users is None:
            users = self._users[end] = set()
            heapq.heappush(self._heap, end)
        users.add(user)

    def due(self, horizon: int) -> set[str]:
        """Take out the users of every hour ending at or before ``horizon``."""
        found: set[str] = set()
        while self._heap and self._heap[0] <= horizon:
            found |= self._users.pop(heapq.heappop(self._heap))
        return found

    def __bool__(self) -> bool:
        return bool(self._heap)

    def __len__(self) -> int:
        return len(set().union(*self._users.values()))


def _touch_order(touch: list[Any]) -> tuple[int, str, int]:
    """A stored touch's place: event time, then source partition and offset."""
    return touch[0], touch[5], touch[6]


def _conversions_key(partition: int) -> str:
    return f"conversions|{partition}"


def held_conversions_from(get: Callable[[str], Any], partition: int) -> int | None:
    """The earliest event time of the conversions ``partition`` holds (pending), ``None``
    when it holds none.

    Conversions are released in offset order (stage two skips replays by offset), so one
    whose time both watermarks have passed can wait behind an earlier offset whose time
    they have not: a web partition read far ahead of its social partition holds many such.
    Stage two must not finish the panes they still belong to, so the web partition's
    watermark sent to it is held below this time (``streams.ingest_stage``); without the
    hold, their credit reached panes already final and dropped, and was lost.
    """
    state = get(_conversions_key(partition))
    pending = state[1] if state else []
    return min(int(p[1]) for p in pending) if pending else None


def _conversions(store: StateStore, partition: int) -> tuple[int, list[list[Any]], list[str]]:
    """(offset of the last released conversion or -1, pending conversions by offset, users
    whose conversions the last call released)."""
    state = store.get(_conversions_key(partition))
    if state is None:
        return -1, [], []
    return int(state[0]), state[1], state[2]


class _SeenIds:
    """Event ids seen per one-second bucket of event time, with the offset they came at."""

    def __init__(self, store: StateStore, src: str) -> None:
        self._store = store
        self._src = src
        self._index: list[int] = store.get(f"seen-index|{src}") or []
        self._buckets: dict[int, dict[str, int]] = {}
        self._dirty: set[int] = set()

    def first(self, event_id: str, ts: int, offset: int) -> bool:
        """True unless ``event_id`` was seen at another offset (a duplicate)."""
        start = ts - ts % _BUCKET_MS
        bucket = self._buckets.get(start)
        if bucket is None:
            bucket = self._store.get(f"seen|{self._src}|{start}") or {}
            self._buckets[start] = bucket
        known = bucket.get(event_id)
        if known is not None:
            return known == offset
        bucket[event_id] = offset
        self._dirty.add(start)
        return True

    def save(self, expire_before: int) -> None:
        index = set(self._index) | self._dirty
        for start in self._dirty:
            self._store.put(f"seen|{self._src}|{start}", self._buckets[start])
        # A replay starts no earlier than the clock's oldest checkpoint, where every event
        # older than this was already late: such buckets can never be asked again.
        expired = {s for s in index if s + _BUCKET_MS < expire_before}
        for start in expired:
            self._store.delete(f"seen|{self._src}|{start}")
        if self._dirty or expired:
            self._store.put(f"seen-index|{self._src}", sorted(index - expired))


def _profit(revenue_micros: int, margin: float) -> int:
    return (revenue_micros * round(margin * MICROS) + MICROS // 2) // MICROS


def _money(
    touches: list[Touch], shares: list[int], revenue: int, profit: int
) -> list[tuple[Touch, int, int, int]]:
    if not touches:
        return []
    money = split(revenue, shares)
    gains = split(profit, shares) if profit >= 0 else [-1] * len(shares)
    return list(zip(touches, shares, money, gains, strict=True))


def _credit_deltas(share: int, revenue: int, profit: int, follower: bool) -> dict[str, int]:
    deltas = {"events": 1, "conversion_credit_micros": share, "revenue_micros": revenue}
    if profit >= 0:
        deltas["profit_micros"] = profit
    else:  # no margin of its own: the views apply the credited campaign's declared margin
        deltas["unmargined_revenue_micros"] = revenue
    if follower:
        deltas["follower_revenue_micros"] = revenue
    return deltas


def _is_follower(touches: list[Touch]) -> bool:
    """Did the user's last follow or unfollow in the lookback follow the brand?"""
    for touch in reversed(touches):
        if touch.touch_type in ("follow", "unfollow"):
            return touch.touch_type == "follow"
    return False


def _unknown_currency(currency: str) -> Rejection:
    return Rejection(RejectReason.UNKNOWN_CURRENCY, f"no exchange rate for {currency}")
