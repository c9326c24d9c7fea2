"""Stage two, per campaign: fold contributions into window states, exactly once.

A window state records, per source topic-partition, the highest source offset it includes.
A contribution whose offset is not above that is a replay (after a crash, or a re-sent
message from stage one) and is skipped, so folding the same input twice changes nothing.
The state is written to the changelog in one message together with its counters, so the
offsets and the aggregates can never disagree after recovery.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pipeline.hll import Reach, user_hash
from pipeline.ingest import NO_TIME
from pipeline.ports import KpiSnapshot
from pipeline.windows import WindowSpec

__all__ = [
    "Contribution",
    "WindowKey",
    "WindowState",
    "final_watermark",
    "fold",
    "is_position_key",
    "parse_key",
    "position_key",
]

_SOCIAL = "social.interactions:"


class WindowKey(NamedTuple):
    # A named tuple, not a frozen dataclass: a batch makes one per changed window, and a
    # tuple is built and hashed in C.
    campaign_id: str
    channel: str
    kind: str
    size_ms: int
    start_ms: int

    def encode(self) -> str:
        return f"{self.campaign_id}|{self.channel}|{self.kind}|{self.size_ms}|{self.start_ms}"

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.size_ms


def position_key(partition: int) -> str:
    """The key, among a partition's windows, of the first offset of that partition of the
    repartition topic that its windows have not seen. A window key has five
    ``|``-separated fields whatever its campaign, so the two never meet."""
    return f"next-offset|{partition}"


def is_position_key(key: str) -> bool:
    return key.count("|") == 1


def parse_key(text: str) -> WindowKey:
    campaign, channel, kind, size, start = text.rsplit("|", 4)
    return WindowKey(campaign, channel, kind, int(size), int(start))


@dataclass(frozen=True, slots=True)
class Contribution:
    """A stage-one record: deltas of one source event for one (campaign, channel)."""

    src: str  # "topic:partition" of the source event
    offset: int
    ts_ms: int
    campaign_id: str
    channel: str
    deltas: Mapping[str, int]
    user_id: str = ""  # counted in reach when the source is social

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Contribution:
        return cls(
            src=record["src"],
            offset=record["o"],
            ts_ms=record["ts"],
            campaign_id=record["c"],
            channel=record["ch"],
            deltas=record["d"],
            user_id=record.get("u", ""),
        )


@dataclass(slots=True)
class WindowState:
    counters: dict[str, int] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    final: bool = False
    reach: Reach | None = None

    @property
    def version(self) -> int:
        """Grows with every event folded in, and by one when the window turns final."""
        return 2 * self.counters.get("events", 0) + int(self.final)

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"k": self.counters, "o": self.offsets, "f": self.final}
        if self.reach is not None:
            state["r"] = self.reach.to_state()
        return state

    @classmethod
    def live(cls, stored: WindowState | Mapping[str, Any] | None) -> WindowState:
        """The state for a value of the windows table: the live object kept there, or one
        decoded from the JSON form that changelog recovery leaves."""
        return stored if isinstance(stored, WindowState) else cls.from_state(stored)

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None) -> WindowState:
        if not state:
            return cls()
        reach = Reach.from_state(state["r"]) if "r" in state else None
        return cls(dict(state["k"]), dict(state["o"]), bool(state.get("f", False)), reach)

    def snapshot(self, key: WindowKey) -> KpiSnapshot:
        return KpiSnapshot(
            campaign_id=key.campaign_id,
            channel=key.channel,
            window_kind=key.kind,
            window_seconds=key.size_ms // 1000,
            window_start_ms=key.start_ms,
            window_end_ms=key.end_ms,
            is_final=self.final,
            version=self.version,
            counters={**self.counters, "reach": self.reach.count() if self.reach else 0},
        )


def fold(
    contributions: Iterable[Contribution],
    specs: Iterable[WindowSpec],
    load: Callable[[WindowKey], WindowState],
) -> dict[WindowKey, WindowState]:
    """Fold a batch into the states it touches; returns only the changed states.

    ``load`` gives a key's current state (a fresh one if unknown). Contributions of one
    source partition must come in offset order, as Kafka delivers them. Pre-aggregates the
    batch: each touched key appears once in the result, however many events hit it.
    """
    spec_list = tuple(specs)
    # Plain tuples as keys inside the loop (34 lookups per event with the default windows):
    # a tuple display is built in C, a WindowKey through its Python __new__; a WindowKey
    # is made only for a window loaded or changed.
    seen: dict[tuple[str, str, str, int, int], WindowState] = {}
    changed: dict[tuple[str, str, str, int, int], None] = {}
    for item in contributions:
        user = user_hash(item.user_id) if item.user_id and item.src.startswith(_SOCIAL) else None
        src, offset, deltas = item.src, item.offset, item.deltas.items()
        for spec in spec_list:
            kind, size = spec.kind, spec.size_ms
            for start in spec.starts(item.ts_ms):
                tkey = (item.campaign_id, item.channel, kind, size, start)
                state = seen.get(tkey)
                if state is None:
                    state = seen[tkey] = load(WindowKey(*tkey))
                if offset <= state.offsets.get(src, -1):
                    continue  # already included: a replay
                counters = state.counters
                for name, delta in deltas:
                    counters[name] = counters.get(name, 0) + delta
                state.offsets[src] = offset
                if user is not None:
                    if state.reach is None:
                        state.reach = Reach()
                    state.reach.add(user)
                changed[tkey] = None
    make = WindowKey._make
    return {make(k): seen[k] for k in changed}


def final_watermark(heard: Mapping[str, int], traffic: Iterable[str]) -> int:
    """The watermark that makes windows final: the lowest over the source partitions heard
    from, once every social and web partition (``traffic``) has been heard; a cost partition
    counts from its first event on. ``NO_TIME`` until then."""
    if not heard or any(src not in heard for src in traffic):
        return NO_TIME
    return min(heard.values())
