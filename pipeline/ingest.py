"""Stage one, per source partition: lateness against the partition's watermark, and the
counter contribution each valid event makes to its campaign's windows.

Lateness must be decided the same way when a partition is replayed after a crash, or the
same event could be counted on one run and sent to the late topic on the next. So the
watermark is a function of the position in the partition: ``PartitionClock`` keeps
checkpoints (last offset of a batch -> max event time up to it) and a batch that starts at
offset ``o`` resumes from the checkpoint at or before ``o - 1``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pipeline.contract import Event, parse_event_time
from pipeline.kpi import MICROS
from pipeline.money import Rates
from pipeline.normalize import CLICK_ID_CHANNELS, campaign_key, normalise_channel
from pipeline.ports import CampaignRow

__all__ = [
    "NO_TIME",
    "Forward",
    "PartitionClock",
    "ServiceCosts",
    "as_record",
    "campaign_row",
    "contribution",
    "money_micros",
    "route_campaign",
]

NO_TIME: Final = -(2**62)
# Checkpoints kept per source partition. A replay starts after the newest but one (the
# last batch may have persisted in part), and what stage one drops (seen ids, touches) it
# drops only behind the oldest kept: a few batches of margin is enough, while every kept
# batch also keeps its event time's ids and touches in the state (512 kept a backlog's
# worth of them: days of event time when catching up, seen in the soak).
_KEEP_CHECKPOINTS: Final = 8


class PartitionClock:
    """Max event time seen in one source partition, reproducible at any recent offset."""

    __slots__ = ("_max", "_offsets")

    def __init__(self, checkpoints: list[tuple[int, int]] | None = None) -> None:
        pairs = sorted(checkpoints or [])
        self._offsets = [o for o, _ in pairs]
        self._max = [t for _, t in pairs]

    def max_before(self, offset: int) -> int:
        """Max event time over offsets ``< offset`` (``NO_TIME`` when unknown)."""
        i = bisect_right(self._offsets, offset - 1)
        return self._max[i - 1] if i else NO_TIME

    def checkpoint(self, last_offset: int, max_time: int) -> None:
        """Record the max event time up to and including ``last_offset``."""
        i = bisect_right(self._offsets, last_offset)
        # A replay rewrites the checkpoints after it; they would be the same values.
        del self._offsets[i:], self._max[i:]
        self._offsets.append(last_offset)
        self._max.append(max_time)
        if len(self._offsets) > _KEEP_CHECKPOINTS:
            del self._offsets[0], self._max[0]

    def next_offset(self) -> int | None:
        """The first offset after the newest checkpoint (``None`` when none)."""
        return self._offsets[-1] + 1 if self._offsets else None

    def replay_from(self) -> int | None:
        """Where a replay after a crash starts: the first offset of the newest checkpoint's
        batch, whose other state changes may not all have persisted (everything before it
        had). ``None``: from the start of the partition."""
        return self._offsets[-2] + 1 if len(self._offsets) > 1 else None

    def latest(self) -> int:
        """Max event time up to the newest checkpoint (``NO_TIME`` when none)."""
        return self._max[-1] if self._max else NO_TIME

    def oldest(self) -> int:
        """Max event time at the oldest kept checkpoint: a replay never starts before it."""
        return self._max[0] if self._max else NO_TIME

    def to_state(self) -> list[list[int]]:
        return [[o, t] for o, t in zip(self._offsets, self._max, strict=True)]

    @classmethod
    def from_state(cls, state: list[list[int]] | None) -> PartitionClock:
        return cls([(int(o), int(t)) for o, t in state or []])


@dataclass(frozen=True, slots=True)
class ServiceCosts:
    """Cost of a customer contact handled by the call centre and on social, in micros."""

    call_centre_micros: int
    social_micros: int

    @property
    def saving_micros(self) -> int:
        return self.call_centre_micros - self.social_micros


@dataclass(slots=True)
class Forward:
    """One event's contribution to one (campaign, channel), sent on to stage two."""

    campaign_id: str
    channel: str
    ts_ms: int
    user_id: str
    deltas: Mapping[str, int]


_SOCIAL_COUNTER: Final = {
    "impression": "impressions",
    "like": "likes",
    "comment": "comments",
    "share": "shares",
    "save": "saves",
    "click": "clicks",
}


def route_campaign(event: Event) -> tuple[str, str]:
    """(campaign key, channel) an event counts for before attribution.

    The campaign is a key (:func:`pipeline.normalize.campaign_key`: trimmed, lower case),
    never the id as written: ids that differ only in case are one campaign. A page view
    counts for the key of its ``utm_campaign`` and the channel of its ``utm_source`` or,
    failing that, of a known click id; a page view with neither is site traffic with no
    campaign (campaign ``""``, channel ``direct``). Which declared campaign a key (an id or
    a campaign's ``utm_campaign`` tag) belongs to is decided by the reader views, from the
    campaign records, so the decision never depends on when a record arrived.
    """
    if event.kind != "web.events":
        return campaign_key(event.campaign_id), event.channel
    data = event.data
    campaign = campaign_key(str(data.get("utm_campaign", "")))
    source = str(data.get("utm_source", "")).strip()
    channel = normalise_channel(source) if source else ""
    if not channel:
        for name in data.get("click_ids", {}):
            channel = CLICK_ID_CHANNELS.get(name.lower(), "")
            if channel:
                break
    return campaign, channel or "direct"


def contribution(
    event: Event, rates: Rates, service: ServiceCosts, staff_hourly_rate: float
) -> Forward | None:
    """The counters one valid event adds, or ``None`` for events that add none here.

    Raises ``RatesError`` for a currency the rates table does not know.
    """
    deltas: dict[str, int] = {"events": 1}
    kind, etype, data = event.kind, event.event_type, event.data
    if kind == "social.interactions":
        counter = _SOCIAL_COUNTER.get(etype)
        if counter is not None:
            deltas[counter] = event.count
        elif etype in ("follow", "unfollow"):
            deltas[etype + "s"] = 1
        elif etype == "mention":
            deltas["mentions_" + data["sentiment"]] = 1
        elif etype == "service_contact":
            deltas["service_contacts"] = 1
            if data["resolved"]:
                deltas["service_resolved"] = 1
                deltas["service_savings_micros"] = service.saving_micros
        elif etype == "video_view":
            deltas["video_views"] = 1
            deltas["video_watch_ms"] = round(data["watch_seconds"] * 1000)
            if data["completed"]:
                deltas["video_completions"] = 1
    elif kind == "web.events":
        if etype != "page_view":
            return None  # conversions are credited by attribution, not counted here
        deltas["visits"] = 1
    elif kind == "campaign.costs":
        currency = data["currency"]
        deltas["media_spend_micros"] = rates.micros(data["media_spend"], currency)
        hours = data.get("staff_hours", 0)
        if "staff_hourly_rate" in data:
            effort = hours * data["staff_hourly_rate"]
            deltas["effort_spend_micros"] = rates.micros(effort, currency)
        else:
            deltas["effort_spend_micros"] = rates.micros(hours * staff_hourly_rate, rates.base)
        deltas["tools_spend_micros"] = rates.micros(data.get("tools_cost", 0), currency)
    else:
        return None  # campaign metadata feeds attribution, not counters
    campaign, channel = route_campaign(event)
    return Forward(campaign, channel, event.ts_ms, event.user_id, deltas)


def campaign_row(event: Event, rates: Rates) -> CampaignRow:
    """A valid ``campaign`` event as the record the reader views use.

    The budget is converted to the base currency (in the base currency when the record
    names none); the caller has refused a currency without a rate. Raises ``RatesError``
    otherwise.
    """
    data = event.data
    budget = data.get("budget")
    currency = data.get("currency", "") or rates.base
    margin = data.get("margin")
    starts, ends = data.get("starts_at"), data.get("ends_at")
    return CampaignRow(
        campaign_key=campaign_key(event.campaign_id),
        campaign_id=event.campaign_id,
        name=data["name"],
        utm_campaign=campaign_key(data.get("utm_campaign", "")),
        margin_ppm=-1 if margin is None else round(margin * MICROS),
        budget=float(budget or 0),
        currency=currency if budget is not None else "",
        budget_micros=-1 if budget is None else rates.micros(budget, currency),
        starts_ms=-1 if starts is None else parse_event_time(starts),
        ends_ms=-1 if ends is None else parse_event_time(ends),
        event_id=event.event_id,
        event_ms=event.ts_ms,
    )


def money_micros(amount: float) -> int:
    """Configured money (already in base currency) in micro-units."""
    return round(amount * MICROS)


def as_record(forward: Forward, src: str, offset: int, watermark: int) -> dict[str, Any]:
    """The JSON-able message stage one sends to stage two."""
    return {
        "src": src,
        "o": offset,
        "wm": watermark,
        "ts": forward.ts_ms,
        "c": forward.campaign_id,
        "ch": forward.channel,
        "u": forward.user_id,
        "d": dict(forward.deltas),
    }
