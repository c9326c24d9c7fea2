"""The simulator streams: messages are made as they are sent, the truth is folded as they
are made, and neither grows with the number of events.

The incremental truth is checked against the batch computation it replaced (kept below,
verbatim from commit b9b50c7's ``pipeline/truth.py``): the plainest statement of the
semantics, holding every message until the end. Extended since with the campaign records'
rules (migration 0010: keys in lower case, the newest record declares a campaign, tags,
default margins), written out as plainly."""

from __future__ import annotations

import io
import itertools
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import orjson
import pytest

from pipeline.attribution import Touch, credit_shares, split
from pipeline.kpi import KPI_COUNTERS, MICROS
from pipeline.money import Rates
from pipeline.normalize import CLICK_ID_CHANNELS, normalise_channel
from pipeline.settings import AttributionModel, AttributionSettings, WindowSettings
from pipeline.simulator import Simulation, SimulationConfig, simulate, truth_config
from pipeline.truth import TruthConfig, compute_truth

RATES = Rates("EUR", {"USD": Decimal("0.92"), "GBP": Decimal("1.17")})
SMALL_WINDOWS = WindowSettings(
    tumbling_seconds=(60, 3600), hopping=((7200, 3600),), report_period_seconds=0
)

# -- the batch truth, as it was ---------------------------------------------------------

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


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


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
    records: list[dict[str, Any]] = field(default_factory=list)


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
    if kind == "campaign.meta":
        state.records.append(body)
    elif kind == _SOCIAL:
        campaign = body.get("campaign_id", "").strip().lower()
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
            body["campaign_id"].strip().lower(),
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
        own = split(profit, shares) if eligible and profit >= 0 else [-1] * len(money)
        for touch, share, amount, gain in zip(eligible, shares, money, own, strict=True):
            if share:
                row = [event_id, touch.campaign_id, touch.channel, touch.event_id]
                credited[model.value].append([*row, share, amount, gain])
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
            deltas["follower_revenue_micros"] = deltas.get("follower_revenue_micros", 0) + amount
    for (campaign, channel), deltas in merged.items():
        _add(state, cfg, campaign, channel, ts, deltas)


def _declared(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per lower-case id, the newest record (event time, then event id)."""
    newest: dict[str, dict[str, Any]] = {}
    for body in sorted(records, key=lambda b: (_ms(b["event_time"]), b["event_id"])):
        newest[body["campaign_id"].strip().lower()] = body
    return newest


def batch_truth(
    entries: Iterable[tuple[str, int, dict[str, Any] | None, str | None]], cfg: TruthConfig
) -> dict[str, Any]:
    state = _State()
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    seen: dict[tuple[str, int], set[str]] = defaultdict(set)
    dead: dict[str, int] = defaultdict(int)
    late = duplicates = 0
    skipped: dict[tuple[str, ...], int] = defaultdict(int)

    def skip(reason: str, kind: str, body: dict[str, Any], ts: int) -> None:
        if kind == "web.events":
            campaign, channel = _web_route(body)
        else:
            campaign = str(body.get("campaign_id", "")).strip().lower()
            channel = normalise_channel(str(body.get("channel", "")))
        skipped[
            (reason, kind, campaign, channel, time.strftime("%Y-%m-%d", time.gmtime(ts // 1000)))
        ] += 1

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
            skip("late", kind, body, ts)
            continue
        state.max_ts[(kind, part)] = max(newest, ts)
        if body["event_id"] in seen[(kind, part)]:
            duplicates += 1
            skip("duplicate", kind, body, ts)
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
    declared = _declared(state.records)
    tagged: dict[str, str] = {}
    for key in sorted(declared):
        tag = declared[key].get("utm_campaign", "").strip().lower()
        if tag and tag not in tagged:
            tagged[tag] = key
    merged: dict[tuple[str, str, str, int, int], dict[str, int]] = defaultdict(
        lambda: defaultdict(int)
    )
    for key, counters in state.windows.items():
        campaign, channel, kind, size, start = key
        owner = campaign if campaign in declared else tagged.get(campaign, campaign)
        record = declared.get(owner)
        values = dict(counters, reach=len(state.reach.get(key, ())))
        if record and record.get("margin"):
            margin = round(record["margin"] * MICROS)
            unmargined = values.get("unmargined_revenue_micros", 0)
            values["profit_micros"] = (
                values.get("profit_micros", 0) + (unmargined * margin + MICROS // 2) // MICROS
            )
        name = record["campaign_id"] if record else owner
        for counter, value in values.items():
            merged[(name, channel, kind, size, start)][counter] += value
    windows = []
    for key, values in sorted(merged.items()):
        campaign, channel, kind, size, start = key
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
    for rows in credited.values():  # under the declared campaign, its margin applied
        for row in rows:
            owner = row[1] if row[1] in declared else tagged.get(row[1], row[1])
            record = declared.get(owner)
            if row[6] < 0:
                margin = round(record["margin"] * MICROS) if record and record.get("margin") else 0
                row[6] = (row[5] * margin + MICROS // 2) // MICROS
            row[1] = record["campaign_id"] if record else owner
    campaigns = {}
    for key, body in sorted(declared.items()):
        budget, margin = body.get("budget"), body.get("margin")
        campaigns[key] = {
            "campaign_id": body["campaign_id"],
            "name": body["name"],
            "utm_campaign": body.get("utm_campaign", "").strip().lower(),
            "margin_ppm": -1 if margin is None else round(margin * MICROS),
            "budget_micros": -1
            if budget is None
            else cfg.rates.micros(budget, body.get("currency") or cfg.rates.base),
        }
    return {
        "counters": list(KPI_COUNTERS),
        "windows": windows,
        "credited": credited,
        "dead_letters": dict(sorted(dead.items())),
        "late": late,
        "duplicates": duplicates,
        "skipped": [[*key, n] for key, n in sorted(skipped.items())],
        "campaigns": campaigns,
    }


# -- the tests --------------------------------------------------------------------------


def recorded(cfg: SimulationConfig) -> tuple[Simulation, list[Any], list[Any]]:
    """A whole run, with what the simulator fed its truth."""
    run = Simulation(cfg)
    fed: list[tuple[str, int, dict[str, Any] | None, str | None]] = []
    add = run.truth.add

    def spy(kind: str, part: int, body: Any, reason: str | None) -> None:
        fed.append((kind, part, body, reason))
        add(kind, part, body, reason)

    run.truth.add = spy  # type: ignore[method-assign]
    return run, list(run.messages()), fed


CONFIGS = {
    "defaults": SimulationConfig(events=20_000, seed=7),
    "short lookback, 30 days": SimulationConfig(
        events=30_000,
        seed=21,
        campaigns=8,
        days=30,
        truth=truth_config(4, RATES, SMALL_WINDOWS, AttributionSettings(lookback_seconds=4 * 3600)),
    ),
    "one partition, first touch": SimulationConfig(
        events=8_000,
        seed=5,
        campaigns=3,
        truth=truth_config(
            1,
            RATES,
            SMALL_WINDOWS,
            AttributionSettings(model=AttributionModel.FIRST_TOUCH, lookback_seconds=3600),
        ),
    ),
    "tiny": SimulationConfig(events=40, seed=3),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_incremental_truth_is_byte_for_byte_the_batch_truth(name: str) -> None:
    cfg = CONFIGS[name]
    run, messages, fed = recorded(cfg)
    expected = orjson.dumps({**batch_truth(fed, cfg.truth), **run.truth_extra()})
    assert orjson.dumps(run.truth_dict()) == expected
    out = io.BytesIO()
    run.write_truth(out)
    assert out.getvalue() == expected
    assert len(messages) == cfg.events == run.sent
    # what was fed is what was sent
    assert [(m.kind, m.partition) for m in messages] == [(k, p) for k, p, _, _ in fed]
    assert all(
        b is None or orjson.loads(m.value) == b
        for m, (_, _, b, _) in zip(messages, fed, strict=True)
    )


def test_compute_truth_takes_the_same_entries_as_before() -> None:
    cfg = CONFIGS["one partition, first touch"]
    _, _, fed = recorded(cfg)
    assert orjson.dumps(compute_truth(fed, cfg.truth)) == orjson.dumps(batch_truth(fed, cfg.truth))


def test_the_stream_is_deterministic_and_keeps_its_proportions() -> None:
    cfg = SimulationConfig(events=20_000, seed=7)
    a, ta = simulate(cfg)
    b, tb = simulate(cfg)
    assert a == b and orjson.dumps(ta) == orjson.dumps(tb)
    kinds = defaultdict(int)
    for m in a:
        kinds[m.kind] += 1
    # the old batch simulator, same arguments: 17,217 social, 2,762 web, 217 late,
    # 193 duplicates, 200 invalid; the mix is the same, the draws are not
    # one record per campaign, and the first campaign declared again
    assert kinds["campaign.meta"] == 5 + 1 and kinds["campaign.costs"] == 18
    assert 16_700 < kinds["social.interactions"] < 17_700
    assert 2_500 < kinds["web.events"] < 3_200
    assert 150 < ta["late"] < 300 and 130 < ta["duplicates"] < 260
    assert sum(ta["dead_letters"].values()) == 200


def test_event_time_mostly_increases_and_follows_the_daily_rhythm() -> None:
    messages, _ = simulate(SimulationConfig(events=50_000, seed=9, invalid_share=0))
    times = [_ms(orjson.loads(m.value)["event_time"]) for m in messages]
    behind = sum(1 for before, t in itertools.pairwise(times) if t < before - 600_000)
    assert behind < 0.02 * len(times)  # only the events sent late on purpose
    by_hour = defaultdict(int)
    for t in times:
        by_hour[t // 3_600_000 % 24] += 1
    assert by_hour[18] > 1.5 * by_hour[6]  # evenings busier than early mornings


def test_the_first_message_comes_before_the_rest_are_made() -> None:
    began = time.monotonic()
    tracemalloc.start()
    try:
        stream = Simulation(SimulationConfig(events=10_000_000, seed=1)).messages()
        first = [next(stream) for _ in range(1_000)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first[0].kind == "campaign.meta"
    assert peak < 16_000_000  # bytes: the batch simulator made all 10M events first (GBs)
    assert time.monotonic() - began < 2


def peak_bytes(events: int) -> int:
    """Peak traced memory of a whole run over one day, with a one-hour lookback and windows
    up to an hour: what the truth must hold is bounded by that horizon and the day's
    windows, however many events fill them."""
    cfg = SimulationConfig(
        events=events,
        seed=4,
        campaigns=2,
        days=1,
        truth=truth_config(
            4,
            RATES,
            WindowSettings(
                tumbling_seconds=(300,), hopping=((3600, 1800),), report_period_seconds=0
            ),
            AttributionSettings(lookback_seconds=3600),
        ),
    )
    tracemalloc.start()
    try:
        run = Simulation(cfg)
        for _ in run.messages():
            pass
        run.write_truth(io.BytesIO())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_number_of_events() -> None:
    # 10x the events in the same day: the open state (touches in the lookback, ids in the
    # lateness horizon, users of open windows, orders not yet sent) is 10x denser, but the
    # peak is the day's windows and the credited rows; measured 2.1 MB and 4.0 MB. The
    # batch simulator held every event: 35 MB and 330 MB.
    small, large = peak_bytes(5_000), peak_bytes(50_000)
    assert small < 5_000_000 and large < 3 * small, (small, large)
