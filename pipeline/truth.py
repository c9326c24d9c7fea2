"""Ground truth: what the pipeline must report for a known sequence of messages.

Computed from the messages themselves in production order, with the pipeline's published
semantics written out plainly (a second implementation, not the worker's code path):

- per source partition, an event older than (newest event time so far - allowed lateness)
  is late; an ``event_id`` seen before in the partition is a duplicate; neither counts,
  but both are counted per (reason, topic kind, campaign key, channel, UTC day of event
  time) as ``skipped``, the campaign and channel being what the event names (a page view's
  ``utm_campaign`` and source);
- each accepted event adds its counters to every window containing its time;
- a conversion is credited once both the social and the web partition of its user have
  passed its time (so at the end of a stream, conversions after that point and every later
  one of the partition are not credited yet); its touches are all accepted touches of the
  user within the lookback;
- a window is final when the watermark of every social and web partition, and of every
  cost partition that has had an event, passed its end;
- campaign ids and ``utm_campaign`` tags count trimmed and in lower case (a key); each
  campaign's newest accepted record (greatest ``event_time``, then ``event_id``) declares
  it for its whole history: a key that is a campaign's id counts for it, else a key that
  campaigns declare as ``utm_campaign`` counts for the one with the smallest id key; rows
  are reported under the declared id, their counters (reach too) summed over the keys;
  revenue credited from a conversion without a margin takes the credited campaign's
  declared margin, rounded half up per window and key (``unmargined_revenue_micros``), and
  in the credited rows (``credited_conversions_current``) per row; those rows name the
  declared campaign too.

``Truth`` takes the messages one at a time and keeps only what can still matter, so its
memory follows the event-time horizon, not the number of messages:

- an event is folded into its windows' counters at once and then dropped;
- a window's set of users (reach) becomes a count once no social partition can accept an
  event in it any more;
- an ``event_id`` is forgotten once its time is past its partition's lateness horizon: a
  copy of that event would now be late, not a duplicate (an id names one event, so its
  copies have its time);
- a conversion is credited as soon as both watermarks of its partition are past its time
  (any touch accepted later is newer than it), and its rows are kept as encoded JSON;
- a touch is dropped once it is older than the lookback before every conversion its
  partition can still credit.

Credits are computed when the conversion is released rather than at the end, which gives
the same result because a user's touches arrive on the user's partitions (every event with
a ``user_id`` is keyed by it); a touch from another partition raises ``ValueError``.

Shared with the worker on purpose, because they are definitions rather than logic: the
attribution model formulas and money rounding (``pipeline.attribution``,
``pipeline.money``), channel aliases (``pipeline.normalize``).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Final

import orjson

from pipeline.attribution import Touch, credit_shares, split
from pipeline.kpi import KPI_COUNTERS, MICROS
from pipeline.money import Rates
from pipeline.normalize import CLICK_ID_CHANNELS, campaign_key, normalise_channel
from pipeline.settings import AttributionModel
from pipeline.truth_declared import declare_credits, declare_windows, directory, owners
from pipeline.windows import WindowSpec

__all__ = ["Truth", "TruthConfig", "compute_truth"]

_NO_TIME: Final = -(2**62)
_SOCIAL, _WEB, _COSTS = "social.interactions", "web.events", "campaign.costs"
_META: Final = "campaign.meta"
_COUNTED = {
    "impression": "impressions",
    "like": "likes",
    "comment": "comments",
    "share": "shares",
    "save": "saves",
    "click": "clicks",
}
_INDEX: Final = {name: i for i, name in enumerate(KPI_COUNTERS)}
_REACH: Final = _INDEX["reach"]
_MODELS: Final = tuple(AttributionModel)
# How often (accepted events) closed reach sets are turned into counts.
_CLOSE_EVERY: Final = 1024

_WindowKey = tuple[str, str, str, int, int]
# (time, source, offset, campaign, channel, type, event_id)
_TouchRow = tuple[int, str, int, str, str, str, str]
# (offset, time, user, event_id, order_id, revenue, profit)
_Conversion = tuple[int, int, str, str, str, int, int]


@dataclass(frozen=True)
class TruthConfig:
    partitions: int
    allowed_lateness_ms: int
    specs: tuple[WindowSpec, ...]
    model: AttributionModel
    lookback_ms: int
    half_life_ms: int
    engagements_are_touchpoints: bool
    rates: Rates
    staff_hourly_rate: float
    service_saving_micros: int


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def _web_route(body: Mapping[str, Any]) -> tuple[str, str]:
    campaign = campaign_key(str(body.get("utm_campaign", "")))
    channel = normalise_channel(body["utm_source"]) if body.get("utm_source") else ""
    if not channel:
        channel = next(
            (
                CLICK_ID_CHANNELS[n.lower()]
                for n in body.get("click_ids", {})
                if n.lower() in CLICK_ID_CHANNELS
            ),
            "",
        )
    return campaign, channel or "direct"


class Truth:
    """The truth of a stream of messages, fed in production order with ``add``.

    ``finish`` ends the stream (idempotent); then ``as_dict`` gives the JSON-able truth
    and ``write`` streams the same document, byte for byte what ``orjson.dumps`` of
    ``as_dict()`` (plus ``extra`` keys) would give, without building it in memory.
    """

    def __init__(self, cfg: TruthConfig) -> None:
        self.cfg = cfg
        self._touch_types = {"click", "visit"} | (
            {"like", "comment", "share", "save"} if cfg.engagements_are_touchpoints else set()
        )
        self._offsets: dict[tuple[str, int], int] = {}
        self._sources: dict[tuple[str, int], str] = {}
        self._source_part: dict[str, int] = {}
        self._max_ts: dict[tuple[str, int], int] = {}
        self._seen: dict[tuple[str, int], set[str]] = {}
        self._seen_by_time: dict[tuple[str, int], list[tuple[int, str]]] = {}
        self._windows: dict[_WindowKey, list[int]] = {}
        self._reach: dict[_WindowKey, set[str] | int] = {}
        self._reach_ends: list[tuple[int, _WindowKey]] = []
        self._touches: dict[str, list[_TouchRow]] = {}
        self._pending: dict[int, deque[_Conversion]] = {}
        # per partition (in order of its first conversion), per model: encoded rows
        self._credited: dict[int, list[bytearray]] = {}
        self._dead: dict[str, int] = {}
        # campaign key -> records accepted: ((event time, event id), record)
        self._records: dict[str, list[tuple[tuple[int, str], dict[str, Any]]]] = {}
        self.late = self.duplicates = 0
        self._skipped: dict[tuple[str, str, str, str, str], int] = {}
        self._accepted = 0
        self._swept_at = _NO_TIME
        self._sweep_every = max(60_000, cfg.lookback_ms // 4)
        self._rows: list[list[Any]] | None = None
        # set by finish(): the declared campaigns and which campaign each key counts for
        self._directory: dict[str, dict[str, Any]] = {}
        self._owners: dict[str, str] = {}

    @property
    def dead_letters(self) -> int:
        """Invalid messages so far."""
        return sum(self._dead.values())

    # -- feeding -------------------------------------------------------------------------

    def add(self, kind: str, part: int, body: Mapping[str, Any] | None, reason: str | None) -> None:
        """One message: its topic kind, partition, parsed body (None if invalid) and the
        dead-letter reason if it is invalid."""
        if self._rows is not None:
            raise RuntimeError("the truth is finished")
        source = (kind, part)
        offset = self._offsets.get(source, 0)
        self._offsets[source] = offset + 1
        if reason is not None or body is None:
            reason = reason or "bad_json"
            self._dead[reason] = self._dead.get(reason, 0) + 1
            return
        ts = _ms(body["event_time"])
        newest = self._max_ts.get(source, _NO_TIME)
        horizon = newest - self.cfg.allowed_lateness_ms
        if ts < horizon:
            self.late += 1
            self._skip("late", kind, ts, body)
            return
        if ts > newest:
            self._max_ts[source] = newest = ts
            horizon = newest - self.cfg.allowed_lateness_ms
        seen = self._seen.setdefault(source, set())
        by_time = self._seen_by_time.setdefault(source, [])
        while by_time and by_time[0][0] < horizon:
            seen.discard(heapq.heappop(by_time)[1])
        event_id = body["event_id"]
        if event_id in seen:
            self.duplicates += 1
            self._skip("duplicate", kind, ts, body)
            return
        seen.add(event_id)
        heapq.heappush(by_time, (ts, event_id))
        self._accept(kind, part, offset, ts, body)
        if kind in (_SOCIAL, _WEB):
            self._release(part, final=False)
        self._accepted += 1
        if self._accepted % _CLOSE_EVERY == 0:
            self._close_reach()
        if newest >= self._swept_at + self._sweep_every:
            self._swept_at = newest
            self._sweep_touches()

    def _source(self, kind: str, part: int) -> str:
        src = self._sources.get((kind, part))
        if src is None:
            src = self._sources[(kind, part)] = f"{kind}:{part}"
            self._source_part[src] = part
        return src

    def _add(
        self, campaign: str, channel: str, ts: int, deltas: Mapping[str, int], user: str = ""
    ) -> None:
        indexed = [(_INDEX[name], value) for name, value in deltas.items()]
        for spec in self.cfg.specs:
            for start in spec.starts(ts):
                key = (campaign, channel, spec.kind, spec.size_ms, start)
                window = self._windows.get(key)
                if window is None:
                    window = self._windows[key] = [0] * len(KPI_COUNTERS)
                for index, value in indexed:
                    window[index] += value
                if user:
                    users = self._reach.get(key)
                    if users is None:
                        self._reach[key] = {user}
                        heapq.heappush(self._reach_ends, (start + spec.size_ms, key))
                    elif isinstance(users, set):
                        users.add(user)
                    else:  # the closing rule below would be wrong
                        raise RuntimeError(f"an accepted event in a closed window {key}")

    def _skip(self, reason: str, kind: str, ts: int, body: Mapping[str, Any]) -> None:
        if kind == _WEB:
            campaign, channel = _web_route(body)
        else:
            campaign = campaign_key(str(body.get("campaign_id", "")))
            channel = normalise_channel(str(body.get("channel", "")))
        day = datetime.fromtimestamp(ts // 1000, UTC).date().isoformat()
        key = (reason, kind, campaign, channel, day)
        self._skipped[key] = self._skipped.get(key, 0) + 1

    def skipped(self) -> list[list[Any]]:
        """[reason, topic kind, campaign key, channel, day, events] of the skipped events,
        sorted."""
        return [[*key, n] for key, n in sorted(self._skipped.items())]

    def _accept(self, kind: str, part: int, offset: int, ts: int, body: Mapping[str, Any]) -> None:
        etype, user = body["event_type"], body.get("user_id", "")
        cfg = self.cfg
        if kind == _META:
            self._records.setdefault(campaign_key(body["campaign_id"]), []).append(
                ((ts, body["event_id"]), dict(body))
            )
        elif kind == _SOCIAL:
            campaign = campaign_key(body.get("campaign_id", ""))
            channel = normalise_channel(body["channel"])
            deltas = {"events": 1}
            if etype in _COUNTED:
                deltas[_COUNTED[etype]] = body.get("count", 1)
            elif etype in ("follow", "unfollow"):
                deltas[etype + "s"] = 1
            elif etype == "mention":
                deltas["mentions_" + body["sentiment"]] = 1
            elif etype == "service_contact":
                deltas["service_contacts"] = 1
                if body["resolved"]:
                    deltas["service_resolved"] = 1
                    deltas["service_savings_micros"] = cfg.service_saving_micros
            elif etype == "video_view":
                deltas["video_views"] = 1
                deltas["video_watch_ms"] = round(body["watch_seconds"] * 1000)
                if body["completed"]:
                    deltas["video_completions"] = 1
            self._add(campaign, channel, ts, deltas, user)
            if (
                user
                and campaign
                and (etype in self._touch_types or etype in ("follow", "unfollow"))
            ):
                self._touches.setdefault(user, []).append(
                    (
                        ts,
                        self._source(kind, part),
                        offset,
                        campaign,
                        channel,
                        etype,
                        body["event_id"],
                    )
                )
        elif kind == _WEB and etype == "page_view":
            campaign, channel = _web_route(body)
            self._add(campaign, channel, ts, {"events": 1, "visits": 1})
            if campaign:
                self._touches.setdefault(user, []).append(
                    (
                        ts,
                        self._source(kind, part),
                        offset,
                        campaign,
                        channel,
                        "visit",
                        body["event_id"],
                    )
                )
        elif kind == _WEB:
            revenue = cfg.rates.micros(body["revenue"], body["currency"])
            margin = body.get("margin")
            profit = (
                -1
                if margin is None
                else ((revenue * round(margin * MICROS) + MICROS // 2) // MICROS)
            )
            if part not in self._pending:
                self._pending[part] = deque()
                self._credited[part] = [bytearray() for _ in _MODELS]
            self._pending[part].append(
                (offset, ts, user, body["event_id"], body["order_id"], revenue, profit)
            )
        elif kind == _COSTS:
            currency = body["currency"]
            rate_effort = (
                cfg.rates.micros(body.get("staff_hours", 0) * body["staff_hourly_rate"], currency)
                if "staff_hourly_rate" in body
                else cfg.rates.micros(
                    body.get("staff_hours", 0) * cfg.staff_hourly_rate, cfg.rates.base
                )
            )
            self._add(
                campaign_key(body["campaign_id"]),
                normalise_channel(body["channel"]),
                ts,
                {
                    "events": 1,
                    "media_spend_micros": cfg.rates.micros(body["media_spend"], currency),
                    "effort_spend_micros": rate_effort,
                    "tools_spend_micros": cfg.rates.micros(body.get("tools_cost", 0), currency),
                },
            )

    # -- what can be settled early -------------------------------------------------------

    def _joint(self, part: int) -> int:
        joint = min(self._max_ts.get((k, part), _NO_TIME) for k in (_SOCIAL, _WEB))
        return joint - self.cfg.allowed_lateness_ms

    def _release(self, part: int, final: bool) -> None:
        """Credit the partition's conversions, in offset order, up to the first one its
        watermarks have not passed. Before the end only strictly passed ones: a touch at
        exactly the watermark could still come."""
        pending = self._pending.get(part)
        if not pending:
            return
        joint = self._joint(part)
        while pending and (pending[0][1] <= joint if final else pending[0][1] < joint):
            self._credit(part, pending.popleft())

    def _close_reach(self) -> None:
        social = [self._max_ts.get((_SOCIAL, p)) for p in range(self.cfg.partitions)]
        if any(ts is None for ts in social):
            return  # a partition not heard yet could still send anything
        closed_before = min(ts for ts in social if ts is not None) - self.cfg.allowed_lateness_ms
        ends = self._reach_ends
        while ends and ends[0][0] <= closed_before:
            key = heapq.heappop(ends)[1]
            self._reach[key] = len(self._reach[key])  # type: ignore[arg-type]

    def _sweep_touches(self) -> None:
        """Drop touches older than the lookback before any conversion still to credit."""
        oldest: dict[int, int] = {}
        for part in range(self.cfg.partitions):
            web = self._max_ts.get((_WEB, part))
            if web is None:
                oldest[part] = _NO_TIME  # a first conversion could be at any time
                continue
            pending = self._pending.get(part) or ()
            soonest = min((c[1] for c in pending), default=web - self.cfg.allowed_lateness_ms)
            oldest[part] = min(soonest, web - self.cfg.allowed_lateness_ms) - self.cfg.lookback_ms
        parts = self._source_part
        for user in list(self._touches):
            kept = [t for t in self._touches[user] if t[0] >= oldest[parts[t[1]]]]
            if kept:
                self._touches[user] = kept
            else:
                del self._touches[user]

    def _credit(self, part: int, conversion: _Conversion) -> None:
        cfg = self.cfg
        _, ts, user, event_id, _, revenue, profit = conversion
        touches = sorted(
            t for t in self._touches.get(user, []) if ts - cfg.lookback_ms <= t[0] <= ts
        )
        if any(self._source_part[t[1]] != part for t in touches):
            raise ValueError(f"user {user} has touches on another partition than {part}")
        follows = [t for t in touches if t[5] in ("follow", "unfollow")]
        follower = bool(follows) and follows[-1][5] == "follow"
        eligible = [
            Touch(t[0], t[3], t[4], "visit" if t[5] == "visit" else t[5], t[6], (t[1], t[2]))
            for t in touches
            if t[5] in self._touch_types
        ]
        for model, out in zip(_MODELS, self._credited[part], strict=True):
            shares = credit_shares(eligible, ts, model, cfg.half_life_ms)
            money = split(revenue, shares) if eligible else []
            own = split(profit, shares) if eligible and profit >= 0 else [-1] * len(money)
            for touch, share, amount, gain in zip(eligible, shares, money, own, strict=True):
                if share:
                    if out:
                        out += b","
                    row = [event_id, touch.campaign_id, touch.channel, touch.event_id]
                    out += orjson.dumps([*row, share, amount, gain])
        merged: dict[tuple[str, str], dict[str, int]] = {}
        parts: list[tuple[tuple[str, str], int, int, int]]
        if eligible:
            shares = credit_shares(eligible, ts, cfg.model, cfg.half_life_ms)
            gains = split(profit, shares) if profit >= 0 else [-1] * len(shares)
            parts = [
                ((t.campaign_id, t.channel), s, m, g)
                for t, s, m, g in zip(eligible, shares, split(revenue, shares), gains, strict=True)
                if s
            ]
        else:
            parts = [(("", "direct"), MICROS, revenue, profit)]
        for pair, share, amount, gain in parts:
            deltas = merged.setdefault(pair, {"events": 1})
            deltas["conversion_credit_micros"] = deltas.get("conversion_credit_micros", 0) + share
            deltas["revenue_micros"] = deltas.get("revenue_micros", 0) + amount
            if gain >= 0:
                deltas["profit_micros"] = deltas.get("profit_micros", 0) + gain
            else:
                deltas["unmargined_revenue_micros"] = (
                    deltas.get("unmargined_revenue_micros", 0) + amount
                )
            if follower:
                deltas["follower_revenue_micros"] = (
                    deltas.get("follower_revenue_micros", 0) + amount
                )
        for (campaign, channel), deltas in merged.items():
            self._add(campaign, channel, ts, deltas)

    # -- the end -------------------------------------------------------------------------

    def finish(self) -> None:
        """End of the stream: credit what the watermarks allow, decide finality."""
        if self._rows is not None:
            return
        for part in self._pending:
            self._release(part, final=True)
        cfg = self.cfg
        traffic = [(k, p) for k in (_SOCIAL, _WEB) for p in range(cfg.partitions)]
        heard = [s for s in self._max_ts if s[0] in (_SOCIAL, _WEB, _COSTS)]
        final_before = (
            _NO_TIME
            if any(s not in self._max_ts for s in traffic)
            else min(self._max_ts[s] for s in heard) - cfg.allowed_lateness_ms
        )
        declared = self._directory = self.campaigns()
        self._owners = owners(declared)
        for key, users in self._reach.items():
            self._windows[key][_REACH] = users if isinstance(users, int) else len(users)
        self._reach.clear()
        merged = declare_windows(self._windows, declared, self._owners)
        self._windows.clear()
        rows = [
            [campaign, channel, kind, size // 1000, start, int(start + size <= final_before), v]
            for (campaign, channel, kind, size, start), v in sorted(merged.items())
        ]
        self._rows = rows
        self._reach_ends.clear()
        self._touches.clear()
        self._seen.clear()
        self._seen_by_time.clear()

    def campaigns(self) -> dict[str, dict[str, Any]]:
        """Per campaign key, its newest accepted record as the views read it (see
        :func:`pipeline.truth_declared.directory`)."""
        return directory(self._records, self.cfg.rates)

    def _finished(self) -> list[list[Any]]:
        self.finish()
        assert self._rows is not None
        return self._rows

    def _credited_json(self, index: int) -> bytes:
        """A model's credited rows as ``credited_conversions_current`` reads them:
        (conversion, declared campaign id, channel, touch, share, revenue, profit), the
        profit of a conversion without a margin of its own from the credited campaign's
        declared margin (rounded half up per row; 0 without one). Call after ``finish``."""
        chunks = []
        for rows in self._credited.values():
            if not rows[index]:
                continue
            declared = declare_credits(
                orjson.loads(b"[" + rows[index] + b"]"), self._directory, self._owners
            )
            chunks.append(orjson.dumps(declared)[1:-1])
        return b"[" + b",".join(chunks) + b"]"

    def as_dict(self) -> dict[str, Any]:
        """The JSON-able truth (finishes the stream first)."""
        rows = self._finished()
        return {
            "counters": list(KPI_COUNTERS),
            "windows": [[*row[:6], list(row[6])] for row in rows],
            "credited": {
                m.value: orjson.loads(self._credited_json(i)) for i, m in enumerate(_MODELS)
            },
            **self._tail(),
        }

    def write(self, out: IO[bytes], extra: Mapping[str, Any] | None = None) -> None:
        """Write ``as_dict()`` with ``extra``'s keys appended, as compact JSON, a window
        and a partition's credits at a time (finishes the stream first)."""
        rows = self._finished()
        out.write(b'{"counters":' + orjson.dumps(list(KPI_COUNTERS)) + b',"windows":[')
        for i, row in enumerate(rows):
            out.write(b"," + orjson.dumps(row) if i else orjson.dumps(row))
        out.write(b'],"credited":{')
        for i, model in enumerate(_MODELS):
            out.write((b"," if i else b"") + orjson.dumps(model.value) + b":")
            out.write(self._credited_json(i))
        out.write(b"}," + orjson.dumps({**self._tail(), **(extra or {})})[1:])

    def _tail(self) -> dict[str, Any]:
        """The document's keys after the credits."""
        return {
            "dead_letters": dict(sorted(self._dead.items())),
            "late": self.late,
            "duplicates": self.duplicates,
            "skipped": self.skipped(),
            "campaigns": self.campaigns(),
        }


def compute_truth(
    entries: Iterable[tuple[str, int, dict[str, Any] | None, str | None]], cfg: TruthConfig
) -> dict[str, Any]:
    """``entries``: (topic kind, partition, parsed body or None, reason if invalid), in
    production order. Returns the JSON-able truth."""
    truth = Truth(cfg)
    for kind, part, body, reason in entries:
        truth.add(kind, part, body, reason)
    return truth.as_dict()
