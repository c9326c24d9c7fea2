"""Synthetic marketing traffic with its ground truth, deterministic for a seed.

The simulator plays campaigns on several networks over ``days`` of event time: impressions
(some pre-aggregated), engagements, clicks that land on the site with UTM tags and click ids,
visits and orders, follows, mentions with sentiment, customer-service contacts, daily spend,
plus organic site traffic, a share of invalid messages and of events delivered late.

Campaign records exercise every rule the views apply: some campaigns are declared with
capitals in their id while their events spell it in any case, every other campaign tags
its links with a ``utm_campaign`` that is not its id, some declare a default margin (and
about 30% of orders carry none of their own), some a budget (in a non-base currency when
the rates table has one), and each a start and an end; one campaign is declared twice,
the later record (renaming it and changing its margin) replacing the first.

It knows each message's partition (Kafka's default partitioner on its key), so it can apply
the pipeline's own lateness rule per partition and say exactly what must land where. The
truth is computed by ``pipeline.truth`` from the messages as they are made, independently
of the worker's code path.

It streams: ``Simulation.messages()`` makes each message when it is asked for and folds it
into the truth at once, so the first message is out at once and memory follows the
event-time horizon (events waiting to be sent, the truth's open state), not ``events``.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any, Final

import orjson

from pipeline.hostile import invalid_message
from pipeline.kpi import MICROS
from pipeline.money import Rates
from pipeline.partitioning import partition_for
from pipeline.settings import AttributionSettings, CostSettings, WindowSettings
from pipeline.truth import Truth, TruthConfig
from pipeline.windows import specs_from_settings

__all__ = [
    "SimMessage",
    "Simulation",
    "SimulationConfig",
    "default_start",
    "simulate",
    "truth_config",
]

# A fixed start for tests and benchmarks that must see the same event times on every run.
DEFAULT_START: Final = "2026-10-01T00:00:00+00:00"
_CHANNELS: Final = ("facebook", "instagram", "linkedin", "x", "tiktok")
_CHANNEL_SPELLINGS: Final = {
    "facebook": ("facebook", "Facebook", "fb", "FB"),
    "instagram": ("instagram", "ig", "Instagram"),
    "linkedin": ("linkedin", "LinkedIn", "li"),
    "x": ("x", "twitter", "Twitter"),
    "tiktok": ("tiktok", "TikTok", "tt"),
}
_CLICK_ID: Final = {
    "facebook": "fbclid",
    "instagram": "igshid",
    "linkedin": "li_fat_id",
    "x": "twclid",
    "tiktok": "ttclid",
}
# Event mix of campaign traffic (weights), before the funnel's follow-ups.
_MIX: Final = (
    ("impression", 40),
    ("like", 14),
    ("comment", 4),
    ("share", 3),
    ("save", 2),
    ("click", 10),
    ("follow", 3),
    ("unfollow", 1),
    ("mention", 5),
    ("service_contact", 2),
    ("video_view", 6),
    ("organic_visit", 6),
)
_KINDS: Final = tuple(k for k, _ in _MIX)
_WEIGHTS: Final = tuple(w for _, w in _MIX)


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    events: int
    seed: int
    campaigns: int = 5
    days: int = 2
    start: str = DEFAULT_START
    invalid_share: float = 0.01
    late_share: float = 0.02
    duplicate_share: float = 0.01
    truth: TruthConfig = field(default_factory=lambda: truth_config(4, Rates("EUR")))

    @property
    def partitions(self) -> int:
        return self.truth.partitions

    @property
    def allowed_lateness_ms(self) -> int:
        return self.truth.allowed_lateness_ms


def default_start(days: int, now: datetime) -> str:
    """The start the CLI uses when none is given: midnight UTC ``days + 1`` days before
    ``now``, so that the simulated days and their follow-ups (orders up to a day after the
    visit) lie in the past, a dashboard's "last 7 days" shows them, and the worker, which
    refuses events ahead of its clock, accepts them all. The same for every run of a day."""
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - timedelta(days=days + 1)).isoformat()


def truth_config(
    partitions: int,
    rates: Rates,
    windows: WindowSettings | None = None,
    attribution: AttributionSettings | None = None,
    costs: CostSettings | None = None,
) -> TruthConfig:
    """The semantics the worker applies under these settings (defaults when omitted)."""
    windows = windows or WindowSettings()
    attribution = attribution or AttributionSettings()
    costs = costs or CostSettings()
    return TruthConfig(
        partitions=partitions,
        allowed_lateness_ms=windows.allowed_lateness_seconds * 1000,
        specs=specs_from_settings(windows.tumbling_seconds, windows.hopping),
        model=attribution.model,
        lookback_ms=attribution.lookback_seconds * 1000,
        half_life_ms=attribution.half_life_seconds * 1000,
        engagements_are_touchpoints=attribution.engagements_are_touchpoints,
        rates=rates,
        staff_hourly_rate=costs.staff_hourly_rate,
        service_saving_micros=round(costs.call_centre_contact_cost * MICROS)
        - round(costs.social_contact_cost * MICROS),
    )


@dataclass(frozen=True, slots=True)
class SimMessage:
    kind: str  # contract name of the topic
    key: bytes
    partition: int
    value: bytes


@dataclass(frozen=True, slots=True)
class _Campaign:
    id: str
    channels: tuple[str, ...]
    weight: int
    tag: str = ""  # the utm_campaign on its links (its id when empty)

    @property
    def link_tag(self) -> str:
        return self.tag or self.id


# A planned event waiting in the send queue: (send time, event number, topic kind, key,
# body; or None for an order whose body is made when it is sent, with its time and user).
_Entry = tuple[int, int, str, str, dict[str, Any] | None, int, str]
_HOUR_MS: Final = 3_600_000
_DAY_MS: Final = 86_400_000


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _rhythm(hour_of_day: int) -> float:
    """Relative traffic in this hour (UTC): more in the afternoon and evening."""
    return 0.55 + 0.45 * math.sin(math.pi * (hour_of_day - 6) / 24) ** 2


class _Generator:
    """Plans events in time order and hands them out in send order, one at a time.

    Campaign traffic starts from ``budget`` seed times: sorted uniform draws made one after
    the other (each the minimum of the draws still to come), mapped through the daily
    rhythm's cumulative distribution, so they come out in time order with nothing stored.
    A click's follow-ups (a visit seconds later, sometimes an order up to a day later) take
    the place of seed times still to come, so traffic is exactly ``budget`` events. Events
    wait in a queue ordered by (send time, event number) until no event still to be made
    can be sent before them; the queue holds only events whose send time is ahead of the
    current seed: follow-ups, and the share delivered late.
    """

    def __init__(self, cfg: SimulationConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.start_ms = int(datetime.fromisoformat(cfg.start).timestamp() * 1000)
        self.seq = 0
        self.n_users = max(50, cfg.events // 8)
        self.currencies = sorted(cfg.truth.rates.as_table())
        self.campaigns = [
            _Campaign(
                # every third campaign is declared with capitals
                f"Cmp-{cfg.seed}-{i:03d}" if i % 3 == 1 else f"cmp-{cfg.seed}-{i:03d}",
                tuple(self.rng.sample(_CHANNELS, self.rng.randint(1, 3))),
                self.rng.choice((1, 2, 4, 8)),
                # every other campaign tags its links with a name of its own
                f"launch_{cfg.seed}_{i}" if i % 2 == 1 else "",
            )
            for i in range(cfg.campaigns)
        ]
        # The spelling of ids and tags on events, from a generator of its own: the main
        # one's sequence (and so the traffic for a seed) stays as it was.
        self.spelling = random.Random(cfg.seed * 7919 + 1)
        self.queue: list[_Entry] = []

    @property
    def n_meta(self) -> int:
        """Campaign records: one per campaign, and the first campaign's second one."""
        return len(self.campaigns) + (1 if self.campaigns else 0)

    @property
    def n_costs(self) -> int:
        return self.cfg.days * sum(len(c.channels) for c in self.campaigns)

    def event_id(self) -> str:
        self.seq += 1
        return f"ev-{self.cfg.seed}-{self.seq:08d}"

    def user(self) -> str:
        return f"u{self.cfg.seed}-{self.rng.randrange(self.n_users):06d}"

    def plan(self, ts: int, kind: str, key: str, body: dict[str, Any]) -> None:
        """Queue the event just made (numbered ``self.seq``), late by chance."""
        heapq.heappush(self.queue, (ts + self.delay(kind), self.seq, kind, key, body, ts, key))

    def delay(self, kind: str) -> int:
        if kind == "campaign.meta" or self.rng.random() >= self.cfg.late_share:
            return 0
        # half arrive a little late (counted), half far too late (sent to the late topic)
        lateness = self.cfg.allowed_lateness_ms
        if self.rng.random() < 0.5:
            return self.rng.randint(1, max(1, lateness // 2))
        return self.rng.randint(3 * lateness, 6 * lateness) + _HOUR_MS

    def plan_order(self, ts: int, user: str) -> None:
        self.seq += 1  # numbered now, made when sent: nothing per order waits but this
        heapq.heappush(
            self.queue, (ts + self.delay("web.events"), self.seq, "", "", None, ts, user)
        )

    def spell(self, name: str) -> str:
        """``name`` as producers write it: mostly as declared, sometimes in other case."""
        roll = self.spelling.random()
        if roll < 0.1:
            return name.upper()
        if roll < 0.2:
            return name.lower()
        return name

    def meta(self) -> None:
        """One record per campaign at the start; the first campaign is declared again an
        hour later (a new name and margin), which replaces the first record."""
        currencies = [c for c in self.currencies if c != self.cfg.truth.rates.base]
        for i, c in enumerate(self.campaigns):
            body: dict[str, Any] = {
                "event_id": self.event_id(),
                "event_type": "campaign",
                "event_time": _iso(self.start_ms),
                "campaign_id": c.id,
                "name": f"Campaign {i + 1}",
                "channels": list(c.channels),
                "utm_campaign": c.link_tag,
                "starts_at": _iso(self.start_ms),
                "ends_at": _iso(self.start_ms + self.cfg.days * _DAY_MS - 1000),
            }
            if i % 4 != 3:
                body["margin"] = (0.3, 0.25, 0.4)[i % 3]
            if i % 3 != 2:
                body["budget"] = 1000.0 * (i + 1) * c.weight
                body["currency"] = currencies[i % len(currencies)] if currencies else "EUR"
            self.plan(self.start_ms, "campaign.meta", c.id, body)
        if self.campaigns:
            c = self.campaigns[0]
            body = {
                "event_id": self.event_id(),
                "event_type": "campaign",
                "event_time": _iso(self.start_ms + _HOUR_MS),
                "campaign_id": c.id,
                "name": "Campaign 1 (relaunched)",
                "utm_campaign": c.link_tag,
                "margin": 0.35,
            }
            self.plan(self.start_ms + _HOUR_MS, "campaign.meta", c.id, body)

    def social(self, etype: str, ts: int, camp: _Campaign, channel: str, user: str) -> None:
        body: dict[str, Any] = {
            "event_id": self.event_id(),
            "event_type": etype,
            "event_time": _iso(ts),
            "campaign_id": self.spell(camp.id),
            "channel": self.rng.choice(_CHANNEL_SPELLINGS[channel]),
            "user_id": user,
        }
        if etype == "impression" and self.rng.random() < 0.3:
            body["count"] = self.rng.randint(20, 500)  # a platform's pre-aggregated count
            del body["user_id"]
        elif etype == "mention":
            body["sentiment"] = self.rng.choices(("positive", "neutral", "negative"), (5, 3, 2))[0]
        elif etype == "service_contact":
            body["resolved"] = self.rng.random() < 0.8
            body["handle_seconds"] = self.rng.randint(30, 900)
        elif etype == "video_view":
            length = self.rng.choice((6, 15, 30, 60))  # seconds
            body["completed"] = self.rng.random() < 0.35
            watched = length if body["completed"] else self.rng.uniform(0.5, length)
            body["watch_seconds"] = round(watched, 3)
        key = user if "user_id" in body else camp.id
        self.plan(ts, "social.interactions", key, body)

    def visit(self, ts: int, user: str, camp: _Campaign | None, channel: str) -> None:
        body: dict[str, Any] = {
            "event_id": self.event_id(),
            "event_type": "page_view",
            "event_time": _iso(ts),
            "user_id": user,
            "session_id": f"s-{self.seq}",
            "url": "https://shop.example/landing",
        }
        if camp is not None:
            if self.rng.random() < 0.8:
                body["utm_source"] = self.rng.choice(_CHANNEL_SPELLINGS[channel])
                body["utm_medium"] = "social"
                tag = camp.link_tag.upper() if self.rng.random() < 0.2 else camp.link_tag
                body["utm_campaign"] = self.spell(tag)
            else:  # only the click id tells where it came from
                body["utm_campaign"] = camp.link_tag
            body["click_ids"] = {_CLICK_ID[channel]: f"c{self.seq}"}
            body["url"] += f"?utm_campaign={camp.link_tag}"
        self.plan(ts, "web.events", user, body)

    def order(self, seq: int, ts: int, user: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "event_id": f"ev-{self.cfg.seed}-{seq:08d}",
            "event_type": "conversion",
            "event_time": _iso(ts),
            "user_id": user,
            "order_id": f"o-{seq}",
            "revenue": round(self.rng.uniform(15, 400), 2),
            "currency": self.rng.choice(self.currencies),
        }
        if self.rng.random() < 0.7:
            body["margin"] = self.rng.choice((0.2, 0.3, 0.35))
        return body

    def costs(self, day: int) -> None:
        ts = self.start_ms + day * _DAY_MS + 8 * _HOUR_MS
        for camp in self.campaigns:
            for channel in camp.channels:
                body: dict[str, Any] = {
                    "event_id": self.event_id(),
                    "event_type": "cost",
                    "event_time": _iso(ts),
                    "campaign_id": self.spell(camp.id),
                    "channel": channel,
                    "media_spend": round(self.rng.uniform(50, 500) * camp.weight, 2),
                    "currency": self.cfg.truth.rates.base,
                    "staff_hours": self.rng.choice((0.5, 1, 2, 4)),
                    "tools_cost": round(self.rng.uniform(0, 30), 2),
                }
                self.plan(ts, "campaign.costs", camp.id, body)

    def seed(self, ts: int, room: int) -> int:
        """One campaign or organic event at ``ts`` and at most ``room`` follow-ups; returns
        how many follow-ups were planned."""
        user = self.user()
        etype = self.rng.choices(_KINDS, _WEIGHTS)[0]
        if etype == "organic_visit":
            self.visit(ts, user, None, "direct")
            return 0
        camp = self.rng.choices(self.campaigns, [c.weight for c in self.campaigns])[0]
        channel = self.rng.choice(camp.channels)
        self.social(etype, ts, camp, channel, user)
        if room < 1 or etype != "click" or self.rng.random() >= 0.7:
            return 0
        landed = ts + self.rng.randint(1_000, 30_000)
        self.visit(landed, user, camp, channel)
        if room < 2 or self.rng.random() >= 0.15:
            return 1
        self.plan_order(landed + self.rng.randint(60_000, _DAY_MS), user)
        return 2

    def due(self, until: int) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """Queued events sent at or before ``until``, in send order."""
        queue = self.queue
        while queue and queue[0][0] <= until:
            _, seq, kind, key, body, ts, user = heapq.heappop(queue)
            if body is None:
                yield "web.events", user, self.order(seq, ts, user)
            else:
                yield kind, key, body

    def planned(self, budget: int) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """Campaign metadata, daily costs and ``budget`` traffic events, in send order."""
        hours = [_rhythm(h % 24) for h in range(self.cfg.days * 24)]
        total = math.fsum(hours)
        self.meta()
        hour, below, day, x, debt = 0, 0.0, 0, 0.0, 0
        left = budget
        for i in range(budget):
            if not left:
                break
            # the smallest of the (budget - i) uniform draws still to come
            x += (1.0 - x) * -math.expm1(math.log(1.0 - self.rng.random()) / (budget - i))
            target = x * total
            while hour < len(hours) - 1 and below + hours[hour] <= target:
                below += hours[hour]
                hour += 1
            offset = int((target - below) / hours[hour] * _HOUR_MS)
            ts = self.start_ms + hour * _HOUR_MS + min(_HOUR_MS - 1, offset)
            while day < self.cfg.days and self.start_ms + day * _DAY_MS <= ts:
                self.costs(day)
                day += 1
            yield from self.due(ts)
            if debt:  # this seed time went to an earlier click's follow-up
                debt -= 1
                continue
            follow_ups = self.seed(ts, left - 1)
            left -= 1 + follow_ups
            debt += follow_ups
        while day < self.cfg.days:
            self.costs(day)
            day += 1
        yield from self.due(2**62)


class Simulation:
    """One run of the simulator, made as it is consumed.

    ``messages()`` yields the messages in production order, each made just before it is
    yielded and fed to ``truth`` at the same time; memory stays within the event-time
    horizon (the send queue, the truth's open state), whatever the number of events. After
    the last message, ``truth_dict()`` or ``write_truth()`` give the truth. Deterministic
    for a configuration. ``messages()`` runs once.

    The truth keeps every window's counters and every credited conversion, so it grows
    with the event time covered. ``follow_truth=False`` makes the same messages without
    feeding it (``truth`` stays empty): memory then stays bounded however long the run,
    for runs that check how the worker behaves rather than what it reports.
    """

    def __init__(self, cfg: SimulationConfig, *, follow_truth: bool = True) -> None:
        self.cfg = cfg
        self.truth = Truth(cfg.truth)
        self.sent = 0
        self._gen = _Generator(cfg)
        self._ran = False
        self._follow_truth = follow_truth

    def messages(self) -> Iterator[SimMessage]:
        if self._ran:
            raise RuntimeError("a simulation runs once")
        self._ran = True
        cfg, gen, rng = self.cfg, self._gen, self._gen.rng
        n_invalid = int(cfg.events * cfg.invalid_share)
        room = max(0, cfg.events - gen.n_meta - gen.n_costs - n_invalid)
        budget = round(room / (1 + cfg.duplicate_share))
        valid = self._with_copies(budget, gen.n_meta + gen.n_costs + budget, room - budget)
        total = gen.n_meta + gen.n_costs + room + n_invalid
        add = self.truth.add if self._follow_truth else _ignore
        for position in range(total):
            # exactly n_invalid of the positions, each equally likely (selection sampling)
            if n_invalid and rng.random() * (total - position) < n_invalid:
                n_invalid -= 1
                kind, raw, reason = invalid_message(
                    rng, gen.event_id(), _iso(gen.start_ms), gen.campaigns[0].id
                )
                part = partition_for(b"u-bad", cfg.partitions)
                add(kind, part, None, reason)
                message = SimMessage(kind, b"u-bad", part, raw)
            else:
                message, body = next(valid)
                add(message.kind, message.partition, body, None)
            self.sent += 1
            yield message

    def _with_copies(
        self, budget: int, originals: int, copies: int
    ) -> Iterator[tuple[SimMessage, dict[str, Any]]]:
        """The planned events, and ``copies`` of them sent again 1 to 50 messages later
        (producers retry: same id, same key)."""
        rng = self._gen.rng
        later: dict[int, list[tuple[SimMessage, dict[str, Any]]]] = {}
        for index, (kind, key, body) in enumerate(self._gen.planned(budget)):
            raw_key = key.encode()
            sent = (
                SimMessage(
                    kind, raw_key, partition_for(raw_key, self.cfg.partitions), orjson.dumps(body)
                ),
                body,
            )
            yield sent
            if copies and rng.random() * (originals - index) < copies:
                copies -= 1
                later.setdefault(index + rng.randint(1, 50), []).append(sent)
            yield from later.pop(index, ())
        for index in sorted(later):
            yield from later[index]

    def truth_extra(self) -> dict[str, Any]:
        """What the truth says about the run itself: its configuration and size."""
        cfg = self.cfg
        return {
            "config": {
                "seed": cfg.seed,
                "events": cfg.events,
                "campaigns": cfg.campaigns,
                "days": cfg.days,
                "start": cfg.start,
                "partitions": cfg.partitions,
                "allowed_lateness_ms": cfg.allowed_lateness_ms,
                "model": cfg.truth.model.value,
                "currencies": self._gen.currencies,
            },
            "sent": self.sent,
        }

    def truth_dict(self) -> dict[str, Any]:
        """The whole truth as a JSON-able dict (ends the truth's stream)."""
        return {**self.truth.as_dict(), **self.truth_extra()}

    def write_truth(self, out: IO[bytes]) -> None:
        """The truth as JSON, written piece by piece: the same bytes as
        ``orjson.dumps(self.truth_dict())``."""
        self.truth.write(out, self.truth_extra())


def _ignore(kind: str, part: int, body: dict[str, Any] | None, reason: str | None) -> None:
    """Stands in for ``Truth.add`` when the truth is not followed."""


def simulate(cfg: SimulationConfig) -> tuple[list[SimMessage], dict[str, Any]]:
    """All messages in production order, and the truth they must produce: the whole run in
    memory, for tests and small runs (``Simulation`` streams)."""
    run = Simulation(cfg)
    messages = list(run.messages())
    return messages, run.truth_dict()
