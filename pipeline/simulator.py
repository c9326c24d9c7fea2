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
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from pipeline.kpi import MICROS
from pipeline.money import Rates
from pipeline.partitioning import partition_for
from pipeline.settings import AttributionSettings, CostSettings, WindowSettings
from pipeline.truth import TruthConfig, compute_truth
from pipeline.windows import specs_from_settings

__all__ = ["SimMessage", "SimulationConfig", "simulate", "truth_config"]

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


@dataclass
class _Planned:
    ts_ms: int
    kind: str
    key: str
    body: dict[str, Any]
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
        self.currencies = sorted(cfg.truth.rates.as_table())
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
        if etype == "impression" and self.rng.random() < 0.3:
            body["count"] = self.rng.randint(20, 500)  # a platform's pre-aggregated count
            del body["user_id"]
        elif etype == "mention":
            body["sentiment"] = self.rng.choices(("positive", "neutral", "negative"), (5, 3, 2))[0]
        elif etype == "service_contact":
            body["resolved"] = self.rng.random() < 0.8
            body["handle_seconds"] = self.rng.randint(30, 900)
        key = user if "user_id" in body else camp.id
        return _Planned(ts, "social.interactions", key, body)

    def visit(self, ts: int, user: str, camp: _Campaign | None, channel: str) -> _Planned:
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
                body["utm_campaign"] = camp.id.upper() if self.rng.random() < 0.2 else camp.id
            else:  # only the click id tells where it came from
                body["utm_campaign"] = camp.id
            body["click_ids"] = {_CLICK_ID[channel]: f"c{self.seq}"}
            body["url"] += f"?utm_campaign={camp.id}"
        return _Planned(ts, "web.events", user, body)

    def order(self, ts: int, user: str) -> _Planned:
        body: dict[str, Any] = {
            "event_id": self.event_id(),
            "event_type": "conversion",
            "event_time": _iso(ts),
            "user_id": user,
            "order_id": f"o-{self.seq}",
            "revenue": round(self.rng.uniform(15, 400), 2),
            "currency": self.rng.choice(self.currencies),
        }
        if self.rng.random() < 0.7:
            body["margin"] = self.rng.choice((0.2, 0.3, 0.35))
        return _Planned(ts, "web.events", user, body)

    def costs(self) -> list[_Planned]:
        out = []
        for day in range(self.cfg.days):
            for camp in self.campaigns:
                for channel in camp.channels:
                    ts = self.start_ms + day * 86_400_000 + 8 * 3_600_000
                    body: dict[str, Any] = {
                        "event_id": self.event_id(),
                        "event_type": "cost",
                        "event_time": _iso(ts),
                        "campaign_id": camp.id,
                        "channel": channel,
                        "media_spend": round(self.rng.uniform(50, 500) * camp.weight, 2),
                        "currency": self.cfg.truth.rates.base,
                        "staff_hours": self.rng.choice((0.5, 1, 2, 4)),
                        "tools_cost": round(self.rng.uniform(0, 30), 2),
                    }
                    out.append(_Planned(ts, "campaign.costs", camp.id, body))
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
        case = self.rng.randrange(8)
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
        if case == 6:
            return (
                "web.events",
                orjson.dumps(
                    {
                        **good,
                        "event_type": "conversion",
                        "order_id": "o",
                        "revenue": 10,
                        "currency": "XXX",
                        "campaign_id": None,
                        "channel": None,
                    }
                ).replace(b',"campaign_id":null,"channel":null', b""),
                "unknown_currency",
            )
        return "social.interactions", orjson.dumps({**good, "padding": "x" * 70_000}), "oversize"


def simulate(cfg: SimulationConfig) -> tuple[list[SimMessage], dict[str, Any]]:
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
        )
        for i, c in enumerate(gen.campaigns)
    ]
    costs = gen.costs()
    n_invalid = int(cfg.events * cfg.invalid_share)
    room = max(0, cfg.events - len(meta) - len(costs) - n_invalid)
    traffic = gen.traffic(round(room / (1 + cfg.duplicate_share)))
    n_duplicates = room - len(traffic)
    planned = meta + costs + traffic
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

    # producers retry: a share of events is sent again a little later, same id and key
    for index in sorted(gen.rng.sample(range(len(planned)), n_duplicates), reverse=True):
        copy = planned[index]
        planned.insert(min(len(planned), index + gen.rng.randint(1, 50)), copy)

    messages: list[SimMessage] = []
    entries: list[tuple[str, int, dict[str, Any] | None, str | None]] = []
    invalid_at = set(gen.rng.sample(range(len(planned) + n_invalid), n_invalid))
    it: Iterator[_Planned] = iter(planned)
    for position in range(len(planned) + n_invalid):
        if position in invalid_at:
            kind, raw, reason = gen.invalid(gen.start_ms)
            key = b"u-bad"
            part = partition_for(key, cfg.partitions)
            messages.append(SimMessage(kind, key, part, raw))
            entries.append((kind, part, None, reason))
            continue
        item = next(it)
        key = item.key.encode()
        part = partition_for(key, cfg.partitions)
        messages.append(SimMessage(item.kind, key, part, orjson.dumps(item.body)))
        entries.append((item.kind, part, item.body, None))
    truth = compute_truth(entries, cfg.truth)
    truth["config"] = {
        "seed": cfg.seed,
        "events": cfg.events,
        "campaigns": cfg.campaigns,
        "days": cfg.days,
        "start": cfg.start,
        "partitions": cfg.partitions,
        "allowed_lateness_ms": cfg.allowed_lateness_ms,
        "model": cfg.truth.model.value,
        "currencies": gen.currencies,
    }
    truth["sent"] = len(messages)
    return messages, truth
