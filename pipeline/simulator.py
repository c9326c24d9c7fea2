"""Synthetic marketing traffic with its ground truth, deterministic for a seed.

The simulator plays campaigns on several networks over ``days`` of event time: impressions
(some pre-aggregated), engagements, clicks that land on the site with UTM tags and click ids,
visits and orders, follows, mentions with sentiment, customer-service contacts, daily spend,
plus organic site traffic, a share of invalid messages and of events delivered late.

It knows each message's partition (Kafka's default partitioner on its key), so it can apply
the pipeline's own lateness rule per partition and say exactly what must land where. The
truth is computed here from the simulator's own knowledge of each event, independently of
the worker's code path.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from pipeline.partitioning import partition_for

__all__ = ["SimMessage", "SimulationConfig", "Truth", "simulate"]

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
    ("organic_visit", 6),
)


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    events: int
    seed: int
    campaigns: int = 5
    days: int = 2
    start: str = DEFAULT_START
    partitions: int = 4
    allowed_lateness_ms: int = 600_000
    invalid_share: float = 0.01
    late_share: float = 0.02
    staff_hourly_rate: float = 60.0
    service_saving_micros: int = 4_000_000


@dataclass(frozen=True, slots=True)
class SimMessage:
    kind: str  # contract name of the topic
    key: bytes
    partition: int
    value: bytes


@dataclass
class Truth:
    """What the pipeline must report for the simulated traffic."""

    config: dict[str, Any]
    # (campaign, channel, window start ms) -> counters, for 60-second tumbling windows
    minute: dict[tuple[str, str, int], dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )
    dead_letters: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    late: int = 0
    sent: int = 0

    def to_json(self) -> bytes:
        windows = [
            {"campaign_id": c, "channel": ch, "window_start_ms": s, "counters": dict(v)}
            for (c, ch, s), v in sorted(self.minute.items())
        ]
        return orjson.dumps(
            {
                "config": self.config,
                "tumbling_60": windows,
                "dead_letters": dict(sorted(self.dead_letters.items())),
                "late": self.late,
                "sent": self.sent,
            },
            option=orjson.OPT_INDENT_2,
        )


@dataclass(frozen=True, slots=True)
class _Campaign:
    id: str
    channels: tuple[str, ...]
    weight: int


@dataclass
class _Planned:
    ts_ms: int
    kind: str
    key: str
    body: dict[str, Any]
    counts_as: tuple[str, str, dict[str, int]] | None  # campaign, channel, deltas
    delay_ms: int = 0


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


class _Generator:
    def __init__(self, cfg: SimulationConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.start_ms = int(datetime.fromisoformat(cfg.start).timestamp() * 1000)
        self.span_ms = cfg.days * 86_400_000
        self.seq = 0
        self.users = [f"u{cfg.seed}-{i:06d}" for i in range(max(50, cfg.events // 8))]
        self.campaigns = [
            _Campaign(
                f"cmp-{cfg.seed}-{i:03d}",
                tuple(self.rng.sample(_CHANNELS, self.rng.randint(1, 3))),
                self.rng.choice((1, 2, 4, 8)),
            )
            for i in range(cfg.campaigns)
        ]

    def event_id(self) -> str:
        self.seq += 1
        return f"ev-{self.cfg.seed}-{self.seq:08d}"

    def when(self) -> int:
        # daily rhythm: more traffic in the afternoon and evening (UTC)
        while True:
            t = self.rng.randrange(self.span_ms)
            hour = (t // 3_600_000) % 24
            if self.rng.random() < 0.55 + 0.45 * math.sin(math.pi * (hour - 6) / 24) ** 2:
                return self.start_ms + t

    def social(self, etype: str, ts: int, camp: _Campaign, channel: str, user: str) -> _Planned:
        body: dict[str, Any] = {
            "event_id": self.event_id(),
            "event_type": etype,
            "event_time": _iso(ts),
            "campaign_id": camp.id,
            "channel": self.rng.choice(_CHANNEL_SPELLINGS[channel]),
            "user_id": user,
        }
        deltas = {"events": 1}
        if etype == "impression":
            n = 1 if self.rng.random() < 0.7 else self.rng.randint(20, 500)
            if n > 1:
                body["count"] = n
                del body["user_id"]
            deltas["impressions"] = n
        elif etype in ("like", "comment", "share", "save", "click"):
            deltas[etype + "s" if etype != "click" else "clicks"] = 1
        elif etype in ("follow", "unfollow"):
            deltas[etype + "s"] = 1
        elif etype == "mention":
            sentiment = self.rng.choices(("positive", "neutral", "negative"), (5, 3, 2))[0]
            body["sentiment"] = sentiment
            deltas["mentions_" + sentiment] = 1
        elif etype == "service_contact":
            resolved = self.rng.random() < 0.8
            body["resolved"] = resolved
            body["handle_seconds"] = self.rng.randint(30, 900)
            deltas["service_contacts"] = 1
            if resolved:
                deltas["service_resolved"] = 1
                deltas["service_savings_micros"] = self.cfg.service_saving_micros
        key = user if "user_id" in body else camp.id
        return _Planned(ts, "social.interactions", key, body, (camp.id, channel, deltas))

    def visit(self, ts: int, user: str, camp: _Campaign | None, channel: str) -> _Planned:
        body: dict[str, Any] = {
            "event_id": self.event_id(),
            "event_type": "page_view",
            "event_time": _iso(ts),
            "user_id": user,
            "session_id": f"s-{self.seq}",
            "url": "https://shop.example/landing",
        }
        if camp is None:
            return _Planned(
                ts, "web.events", user, body, ("", "direct", {"events": 1, "visits": 1})
            )
        if self.rng.random() < 0.8:
            body["utm_source"] = self.rng.choice(_CHANNEL_SPELLINGS[channel])
            body["utm_medium"] = "social"
            body["utm_campaign"] = camp.id.upper() if self.rng.random() < 0.2 else camp.id
        else:  # only the click id tells where it came from
            body["utm_campaign"] = camp.id
        body["click_ids"] = {_CLICK_ID[channel]: f"c{self.seq}"}
        body["url"] += f"?utm_campaign={camp.id}"
        return _Planned(
            ts, "web.events", user, body, (camp.id, channel, {"events": 1, "visits": 1})
        )

    def order(self, ts: int, user: str) -> _Planned:
        body = {
            "event_id": self.event_id(),
            "event_type": "conversion",
            "event_time": _iso(ts),
            "user_id": user,
            "order_id": f"o-{self.seq}",
            "revenue": round(self.rng.uniform(15, 400), 2),
            "currency": "EUR",
            "margin": 0.3,
        }
        return _Planned(ts, "web.events", user, body, None)

    def costs(self) -> list[_Planned]:
        out = []
        for day in range(self.cfg.days):
            for camp in self.campaigns:
                for channel in camp.channels:
                    ts = self.start_ms + day * 86_400_000 + 8 * 3_600_000
                    media = round(self.rng.uniform(50, 500) * camp.weight, 2)
                    hours = self.rng.choice((0.5, 1, 2, 4))
                    tools = round(self.rng.uniform(0, 30), 2)
                    body = {
                        "event_id": self.event_id(),
                        "event_type": "cost",
                        "event_time": _iso(ts),
                        "campaign_id": camp.id,
                        "channel": channel,
                        "media_spend": media,
                        "currency": "EUR",
                        "staff_hours": hours,
                        "tools_cost": tools,
                    }
                    deltas = {
                        "events": 1,
                        "media_spend_micros": round(media * 1_000_000),
                        "effort_spend_micros": round(
                            hours * self.cfg.staff_hourly_rate * 1_000_000
                        ),
                        "tools_spend_micros": round(tools * 1_000_000),
                    }
                    out.append(
                        _Planned(ts, "campaign.costs", camp.id, body, (camp.id, channel, deltas))
                    )
        return out

    def traffic(self, budget: int) -> list[_Planned]:
        out: list[_Planned] = []
        weights = [c.weight for c in self.campaigns]
        kinds = [k for k, _ in _MIX]
        mix = [w for _, w in _MIX]
        while len(out) < budget:
            ts = self.when()
            user = self.rng.choice(self.users)
            etype = self.rng.choices(kinds, mix)[0]
            if etype == "organic_visit":
                out.append(self.visit(ts, user, None, "direct"))
                continue
            camp = self.rng.choices(self.campaigns, weights)[0]
            channel = self.rng.choice(camp.channels)
            out.append(self.social(etype, ts, camp, channel, user))
            if etype == "click" and self.rng.random() < 0.7:
                landed = ts + self.rng.randint(1_000, 30_000)
                out.append(self.visit(landed, user, camp, channel))
                if self.rng.random() < 0.15:
                    out.append(self.order(landed + self.rng.randint(60_000, 86_400_000), user))
        return out[:budget]

    def invalid(self, ts: int) -> tuple[str, bytes, str]:
        """A hostile message: (topic kind, raw bytes, the reason the pipeline must give)."""
        good = {
            "event_id": self.event_id(),
            "event_type": "like",
            "event_time": _iso(ts),
            "campaign_id": self.campaigns[0].id,
            "channel": "facebook",
            "user_id": "u-bad",
        }
        case = self.rng.randrange(7)
        if case == 0:
            return "social.interactions", b'{"event_id": "x", "event_type": "like",', "bad_json"
        if case == 1:
            return "social.interactions", orjson.dumps({**good, "count": "ten"}), "schema_violation"
        if case == 2:
            del good["user_id"]
            return "social.interactions", orjson.dumps(good), "schema_violation"
        if case == 3:
            return (
                "social.interactions",
                orjson.dumps({**good, "event_type": "poke"}),
                "unknown_event_type",
            )
        if case == 4:
            raw = (
                orjson.dumps(
                    {**good, "event_type": "conversion", "order_id": "o", "currency": "EUR"}
                )[:-1]
                + b', "revenue": NaN}'
            )
            return "web.events", raw, "bad_json"
        if case == 5:
            return (
                "social.interactions",
                orjson.dumps({**good, "event_time": "2999-01-01T00:00:00Z"}),
                "clock_skew",
            )
        return "social.interactions", orjson.dumps({**good, "padding": "x" * 70_000}), "oversize"


def simulate(cfg: SimulationConfig) -> tuple[list[SimMessage], Truth]:
    """All messages in production order, and the truth they must produce."""
    gen = _Generator(cfg)
    meta = [
        _Planned(
            gen.start_ms,
            "campaign.meta",
            c.id,
            {
                "event_id": gen.event_id(),
                "event_type": "campaign",
                "event_time": _iso(gen.start_ms),
                "campaign_id": c.id,
                "name": f"Campaign {i + 1}",
                "channels": list(c.channels),
                "utm_campaign": c.id,
                "currency": "EUR",
                "margin": 0.3,
            },
            None,
        )
        for i, c in enumerate(gen.campaigns)
    ]
    costs = gen.costs()
    n_invalid = int(cfg.events * cfg.invalid_share)
    budget = max(0, cfg.events - len(meta) - len(costs) - n_invalid)
    planned = meta + costs + gen.traffic(budget)
    for item in planned:
        if item.kind != "campaign.meta" and gen.rng.random() < cfg.late_share:
            # half arrive a little late (counted), half far too late (sent to the late topic)
            lateness = cfg.allowed_lateness_ms
            item.delay_ms = (
                gen.rng.randint(1, max(1, lateness // 2))
                if gen.rng.random() < 0.5
                else gen.rng.randint(3 * lateness, 6 * lateness) + 3_600_000
            )
    planned.sort(key=lambda p: (p.ts_ms + p.delay_ms, p.body["event_id"]))

    truth = Truth(
        config={
            "seed": cfg.seed,
            "events": cfg.events,
            "campaigns": cfg.campaigns,
            "days": cfg.days,
            "start": cfg.start,
            "partitions": cfg.partitions,
            "allowed_lateness_ms": cfg.allowed_lateness_ms,
        }
    )
    messages: list[SimMessage] = []
    max_ts: dict[tuple[str, int], int] = {}
    invalid_at = set(gen.rng.sample(range(len(planned) + n_invalid), n_invalid))
    it: Iterator[_Planned] = iter(planned)
    for position in range(len(planned) + n_invalid):
        if position in invalid_at:
            kind, raw, reason = gen.invalid(gen.start_ms)
            key = b"u-bad"
            messages.append(SimMessage(kind, key, partition_for(key, cfg.partitions), raw))
            truth.dead_letters[reason] += 1
            continue
        item = next(it)
        key = item.key.encode()
        part = partition_for(key, cfg.partitions)
        messages.append(SimMessage(item.kind, key, part, orjson.dumps(item.body)))
        seen = max_ts.get((item.kind, part), -(2**62))
        if item.ts_ms < seen - cfg.allowed_lateness_ms:
            truth.late += 1
            continue
        max_ts[(item.kind, part)] = max(seen, item.ts_ms)
        if item.counts_as is not None:
            campaign, channel, deltas = item.counts_as
            minute = truth.minute[(campaign, channel, item.ts_ms - item.ts_ms % 60_000)]
            for name, value in deltas.items():
                minute[name] += value
    truth.sent = len(messages)
    return messages, truth
