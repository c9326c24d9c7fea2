"""Ground truth: what the pipeline must report for a known sequence of messages.

Computed from the messages themselves in production order, with the pipeline's published
semantics written out plainly (a second implementation, not the worker's code path):

- per source partition, an event older than (newest event time so far - allowed lateness)
  is late; an ``event_id`` seen before in the partition is a duplicate; neither counts;
- each accepted event adds its counters to every window containing its time;
- a conversion is credited once both the social and the web partition of its user have
  passed its time (so at the end of a stream, conversions after that point and every later
  one of the partition are not credited yet); its touches are all accepted touches of the
  user within the lookback;
- a window is final when the watermark of every social and web partition, and of every
  cost partition that has had an event, passed its end.

Shared with the worker on purpose, because they are definitions rather than logic: the
attribution model formulas and money rounding (``pipeline.attribution``,
``pipeline.money``), channel aliases (``pipeline.normalize``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from pipeline.attribution import Touch, credit_shares, split
from pipeline.kpi import KPI_COUNTERS, MICROS
from pipeline.money import Rates
from pipeline.normalize import CLICK_ID_CHANNELS, normalise_channel
from pipeline.settings import AttributionModel
from pipeline.windows import WindowSpec

__all__ = ["TruthConfig", "compute_truth"]

_NO_TIME: Final = -(2**62)
_SOCIAL, _WEB, _COSTS = "social.interactions", "web.events", "campaign.costs"
_COUNTED = {
    "impression": "impressions",
    "like": "likes",
    "comment": "comments",
    "share": "shares",
    "save": "saves",
    "click": "clicks",
}


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


@dataclass
class _State:
    windows: dict[tuple[str, str, str, int, int], dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )
    reach: dict[tuple[str, str, str, int, int], set[str]] = field(
        default_factory=lambda: defaultdict(set)
    )
    touches: dict[str, list[tuple[int, str, int, str, str, str, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    pending: dict[int, list[tuple[int, int, str, str, str, int, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    max_ts: dict[tuple[str, int], int] = field(default_factory=dict)


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def _add(
    state: _State,
    cfg: TruthConfig,
    campaign: str,
    channel: str,
    ts: int,
    deltas: dict[str, int],
    user: str | None = None,
) -> None:
    for spec in cfg.specs:
        for start in spec.starts(ts):
            key = (campaign, channel, spec.kind, spec.size_ms, start)
            window = state.windows[key]
            for name, value in deltas.items():
                window[name] += value
            if user:
                state.reach[key].add(user)


def _web_route(body: dict[str, Any]) -> tuple[str, str]:
    campaign = str(body.get("utm_campaign", "")).strip().lower()
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


def _accept(
    state: _State, cfg: TruthConfig, kind: str, part: int, offset: int, body: dict[str, Any]
) -> None:
    ts, etype, user = _ms(body["event_time"]), body["event_type"], body.get("user_id", "")
    src = f"{kind}:{part}"
    touch_types = {"click", "visit"} | (
        {"like", "comment", "share", "save"} if cfg.engagements_are_touchpoints else set()
    )
    if kind == _SOCIAL:
        campaign, channel = body.get("campaign_id", ""), normalise_channel(body["channel"])
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
        _add(state, cfg, campaign, channel, ts, deltas, user or None)
        if user and campaign and (etype in touch_types or etype in ("follow", "unfollow")):
            state.touches[user].append(
                (ts, src, offset, campaign, channel, etype, body["event_id"])
            )
    elif kind == _WEB and etype == "page_view":
        campaign, channel = _web_route(body)
        _add(state, cfg, campaign, channel, ts, {"events": 1, "visits": 1})
        if campaign:
            state.touches[user].append(
                (ts, src, offset, campaign, channel, "visit", body["event_id"])
            )
    elif kind == _WEB:
        revenue = cfg.rates.micros(body["revenue"], body["currency"])
        margin = body.get("margin")
        profit = (
            -1 if margin is None else ((revenue * round(margin * MICROS) + MICROS // 2) // MICROS)
        )
        state.pending[part].append(
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
        _add(
            state,
            cfg,
            body["campaign_id"],
            normalise_channel(body["channel"]),
            ts,
            {
                "events": 1,
                "media_spend_micros": cfg.rates.micros(body["media_spend"], currency),
                "effort_spend_micros": rate_effort,
                "tools_spend_micros": cfg.rates.micros(body.get("tools_cost", 0), currency),
            },
        )


def _credit(
    state: _State,
    cfg: TruthConfig,
    conversion: tuple[int, int, str, str, str, int, int],
    credited: dict[str, list[list[Any]]],
) -> None:
    _, ts, user, event_id, _, revenue, profit = conversion
    touches = sorted(t for t in state.touches.get(user, []) if ts - cfg.lookback_ms <= t[0] <= ts)
    follows = [t for t in touches if t[5] in ("follow", "unfollow")]
    follower = bool(follows) and follows[-1][5] == "follow"
    touch_types = {"click", "visit"} | (
        {"like", "comment", "share", "save"} if cfg.engagements_are_touchpoints else set()
    )
    eligible = [
        Touch(t[0], t[3], t[4], "visit" if t[5] == "visit" else t[5], t[6], (t[1], t[2]))
        for t in touches
        if t[5] in touch_types
    ]
    for model in AttributionModel:
        shares = credit_shares(eligible, ts, model, cfg.half_life_ms)
        money = split(revenue, shares) if eligible else []
        for touch, share, amount in zip(eligible, shares, money, strict=True):
            if share:
                credited[model.value].append(
                    [event_id, touch.campaign_id, touch.channel, touch.event_id, share, amount]
                )
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
        if follower:
            deltas["follower_revenue_micros"] = deltas.get("follower_revenue_micros", 0) + amount
    for (campaign, channel), deltas in merged.items():
        _add(state, cfg, campaign, channel, ts, deltas)


def compute_truth(
    entries: Iterable[tuple[str, int, dict[str, Any] | None, str | None]], cfg: TruthConfig
) -> dict[str, Any]:
    """``entries``: (topic kind, partition, parsed body or None, reason if invalid), in
    production order. Returns the JSON-able truth."""
    state = _State()
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    seen: dict[tuple[str, int], set[str]] = defaultdict(set)
    dead: dict[str, int] = defaultdict(int)
    late = duplicates = 0
    for kind, part, body, reason in entries:
        offset = offsets[(kind, part)]
        offsets[(kind, part)] += 1
        if reason is not None or body is None:
            dead[reason or "bad_json"] += 1
            continue
        ts = _ms(body["event_time"])
        newest = state.max_ts.get((kind, part), _NO_TIME)
        if ts < newest - cfg.allowed_lateness_ms:
            late += 1
            continue
        state.max_ts[(kind, part)] = max(newest, ts)
        if body["event_id"] in seen[(kind, part)]:
            duplicates += 1
            continue
        seen[(kind, part)].add(body["event_id"])
        _accept(state, cfg, kind, part, offset, body)

    credited: dict[str, list[list[Any]]] = {m.value: [] for m in AttributionModel}
    for part, pending in state.pending.items():
        joint = min(state.max_ts.get((k, part), _NO_TIME) for k in (_SOCIAL, _WEB))
        joint -= cfg.allowed_lateness_ms
        for conversion in sorted(pending):
            if conversion[1] > joint:
                break
            _credit(state, cfg, conversion, credited)

    traffic = [(k, p) for k in (_SOCIAL, _WEB) for p in range(cfg.partitions)]
    heard = [s for s in state.max_ts if s[0] in (_SOCIAL, _WEB, _COSTS)]
    final_before = (
        _NO_TIME
        if any(s not in state.max_ts for s in traffic)
        else min(state.max_ts[s] for s in heard) - cfg.allowed_lateness_ms
    )
    windows = []
    for key, counters in sorted(state.windows.items()):
        campaign, channel, kind, size, start = key
        values = dict(counters, reach=len(state.reach.get(key, ())))
        windows.append(
            [
                campaign,
                channel,
                kind,
                size // 1000,
                start,
                int(start + size <= final_before),
                [values.get(name, 0) for name in KPI_COUNTERS],
            ]
        )
    return {
        "counters": list(KPI_COUNTERS),
        "windows": windows,
        "credited": credited,
        "dead_letters": dict(sorted(dead.items())),
        "late": late,
        "duplicates": duplicates,
    }
