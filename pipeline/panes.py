"""Stage two's state: panes, not windows (window slicing, as in Flink and Scotty).

Every configured window is cut into panes of one size: a tumbling window is one pane of its
own size, a hopping window the ``size / step`` consecutive panes of its step. An event
updates one pane per distinct pane size (with the default windows 60 s, 1 h and 1 d: three
updates, where updating every window meant 34), and each batch writes only the panes it
touched. The reader views compose hopping windows from the panes (sums add; reach merges
the panes' sketches), so the worker's cost per event does not grow with the windows users
add. :func:`compose` is the same composition in Python, the reference the views are tested
against.

A pane state keeps its counters in the KPI catalogue's order (a list, not a dict of names),
the highest source offset it includes per source partition (replays are skipped, as
before), whether it is final, and its reach sketch; :meth:`PaneState.encode` is its binary
changelog form.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

from pipeline.aggregate import Contribution
from pipeline.hll import Reach, estimate, user_hash
from pipeline.kpi import KPI_COUNTERS, KpiValues
from pipeline.ports import KpiSnapshot
from pipeline.windows import WindowSpec

__all__ = [
    "FORMAT_LAST_COUNTER",
    "PANE_COUNTERS",
    "PaneKey",
    "PaneSize",
    "PaneState",
    "compose",
    "fold",
    "is_pane_key",
    "pane_sizes",
]

# Reach is not a counter: it is read from the sketch.
PANE_COUNTERS: Final = tuple(name for name in KPI_COUNTERS if name != "reach")
_INDEX: Final = {name: i for i, name in enumerate(PANE_COUNTERS)}
_EVENTS: Final = _INDEX["events"]
_REACH: Final = KPI_COUNTERS.index("reach")  # where reach goes among the pane's counters
_SOCIAL: Final = "social.interactions:"

# The last counter of every format of the state. A new counter goes last in the catalogue
# with a new format here; a state of an older format decodes with 0 for the counters added
# since (a unit test checks that the newest format ends with the catalogue's last counter).
FORMAT_LAST_COUNTER: Final = {
    1: "follower_revenue_micros",
    2: "unmargined_revenue_micros",
    3: "video_watch_ms",
}
_FORMAT: Final = max(FORMAT_LAST_COUNTER)
# format, final, number of offsets, counters
_HEADS: Final = {
    number: struct.Struct(f"<BBH{PANE_COUNTERS.index(last) + 1}q")
    for number, last in FORMAT_LAST_COUNTER.items()
}
_HEAD: Final = _HEADS[_FORMAT]
_OFFSET: Final = struct.Struct("<Hq")  # length of the source name, offset; then the name


class PaneKey(NamedTuple):
    campaign_id: str
    channel: str
    size_ms: int
    start_ms: int

    def encode(self) -> str:
        return f"{self.campaign_id}|{self.channel}|{self.size_ms}|{self.start_ms}"

    @classmethod
    def parse(cls, text: str) -> PaneKey:
        campaign, channel, size, start = text.rsplit("|", 3)
        return cls(campaign, channel, int(size), int(start))

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.size_ms


def is_pane_key(key: str) -> bool:
    """A pane key has four ``|``-separated fields; stage two's other keys (its position,
    the watermarks it heard) have two."""
    return key.count("|") >= 3


@dataclass(frozen=True, slots=True)
class PaneSize:
    """One pane size and what the readers make of its panes."""

    size_ms: int
    tumbling: bool  # a configured tumbling window: its panes are read as those windows
    hopping_seconds: tuple[int, ...]  # sizes of the hopping windows composed of it

    @property
    def kind(self) -> str:
        """``window_kind`` of its rows: ``tumbling``, or ``pane`` for a step alone."""
        return "tumbling" if self.tumbling else "pane"


def pane_sizes(specs: Iterable[WindowSpec]) -> tuple[PaneSize, ...]:
    """The distinct pane sizes of a set of windows, smallest first."""
    tumbling: set[int] = set()
    hopping: dict[int, set[int]] = defaultdict(set)
    for spec in specs:
        if spec.size_ms == spec.step_ms:
            tumbling.add(spec.size_ms)
        else:
            hopping[spec.step_ms].add(spec.size_ms // 1000)
    return tuple(
        PaneSize(size, size in tumbling, tuple(sorted(hopping.get(size, ()))))
        for size in sorted(tumbling | hopping.keys())
    )


class PaneState:
    __slots__ = ("counters", "final", "offsets", "reach")

    def __init__(
        self,
        counters: list[int] | None = None,
        offsets: dict[str, int] | None = None,
        final: bool = False,
        reach: Reach | None = None,
    ) -> None:
        self.counters = counters if counters is not None else [0] * len(PANE_COUNTERS)
        self.offsets = offsets if offsets is not None else {}
        self.final = final
        self.reach = reach

    @property
    def version(self) -> int:
        """Grows with every event folded in, and by one when the pane turns final."""
        return 2 * self.counters[_EVENTS] + int(self.final)

    def encode(self) -> bytes:
        parts = [_HEAD.pack(_FORMAT, self.final, len(self.offsets), *self.counters)]
        for src, offset in self.offsets.items():
            name = src.encode()
            parts.append(_OFFSET.pack(len(name), offset) + name)
        if self.reach is not None:
            parts.append(self.reach.to_bytes())
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> PaneState:
        """The state :meth:`encode` wrote; a ``ValueError`` for anything else."""
        layout = _HEADS.get(data[0]) if data else None
        if layout is None:
            raise ValueError(f"not a pane state (format byte {data[:1]!r})")
        view = memoryview(data)
        head = layout.unpack_from(view)
        pos = layout.size
        offsets = {}
        for _ in range(head[2]):
            length, offset = _OFFSET.unpack_from(view, pos)
            pos += _OFFSET.size
            offsets[bytes(view[pos : pos + length]).decode()] = offset
            pos += length
        reach = Reach.from_bytes(view[pos:]) if pos < len(data) else None
        counters = list(head[3:])
        counters += [0] * (len(PANE_COUNTERS) - len(counters))
        return cls(counters, offsets, bool(head[1]), reach)

    def snapshot(self, key: PaneKey, size: PaneSize) -> KpiSnapshot:
        """The pane as a row: counters, reach, and the sketch when hopping windows are
        composed of it (the views merge sketches; a pane read only as a tumbling window
        needs just its count)."""
        reach = self.reach
        values = self.counters.copy()  # the state goes on changing; the snapshot must not
        values.insert(_REACH, reach.count() if reach else 0)
        composed = bool(size.hopping_seconds) and reach is not None
        return KpiSnapshot(
            campaign_id=key.campaign_id,
            channel=key.channel,
            window_kind=size.kind,
            window_seconds=key.size_ms // 1000,
            window_start_ms=key.start_ms,
            window_end_ms=key.end_ms,
            is_final=self.final,
            version=self.version,
            counters=KpiValues(values),
            hopping_seconds=size.hopping_seconds,
            reach_users=reach.users() if composed and reach else (),
            reach_codes=tuple(reach.codes()) if composed and reach else (),
        )


PaneTuple = tuple[str, str, int, int]


def fold(
    contributions: Iterable[Contribution],
    sizes: Sequence[PaneSize],
    load: Callable[[PaneKey], PaneState],
) -> tuple[dict[PaneKey, PaneState], int]:
    """Fold a batch into the panes it touches; returns the changed panes only, and how
    many contributions were replays.

    ``load`` gives a pane's current state (a fresh one if unknown). Contributions of one
    source partition must come in offset order, as Kafka delivers them. A contribution whose
    offset a pane already includes is a replay and changes nothing there; it counts as one
    replay however many of its panes had it (after a crash some may have, some not).
    """
    widths = tuple(size.size_ms for size in sizes)
    seen: dict[PaneTuple, PaneState] = {}
    changed: dict[PaneTuple, None] = {}
    index = _INDEX
    replays = 0
    for item in contributions:
        user = user_hash(item.user_id) if item.user_id and item.src.startswith(_SOCIAL) else None
        src, offset, ts = item.src, item.offset, item.ts_ms
        # Counter positions once per contribution, not once per pane.
        deltas = [(index[name], delta) for name, delta in item.deltas.items()]
        replayed = False
        for width in widths:
            tkey = (item.campaign_id, item.channel, width, ts - ts % width)
            state = seen.get(tkey)
            if state is None:
                state = seen[tkey] = load(PaneKey(*tkey))
            if offset <= state.offsets.get(src, -1):
                replayed = True  # already included
                continue
            counters = state.counters
            for position, delta in deltas:
                counters[position] += delta
            state.offsets[src] = offset
            if user is not None:
                if state.reach is None:
                    state.reach = Reach()
                state.reach.add(user)
            changed[tkey] = None
        replays += replayed
    make = PaneKey._make
    return {make(k): seen[k] for k in changed}, replays


def compose(
    panes: Iterable[KpiSnapshot], final_watermark_ms: int
) -> dict[tuple[str, str, str, int, int], KpiSnapshot]:
    """The windows readers see, from the newest row of every pane: what the view
    ``kpi_current`` computes. Keyed like the truth's windows: (campaign, channel, kind,
    seconds, start ms).

    Tumbling windows are their panes. A hopping window sums the counters of the panes it
    covers; its reach is the exact union of their users while every pane is exact, else the
    estimate of their merged sketches; it is final once ``final_watermark_ms`` (the lowest
    over the stage-two partitions) has passed its end; its version is the sum of its panes'
    versions, plus one when final."""
    out: dict[tuple[str, str, str, int, int], KpiSnapshot] = {}
    groups: dict[tuple[str, str, int, int], list[KpiSnapshot]] = defaultdict(list)
    for pane in panes:
        if pane.window_kind == "tumbling":
            key = (pane.campaign_id, pane.channel, "tumbling", pane.window_seconds)
            out[(*key, pane.window_start_ms)] = pane
        step = pane.window_seconds * 1000
        for seconds in pane.hopping_seconds:
            for i in range(seconds * 1000 // step):
                start = pane.window_start_ms - i * step
                groups[(pane.campaign_id, pane.channel, seconds, start)].append(pane)
    for (campaign, channel, seconds, start), members in groups.items():
        totals: dict[str, int] = {}
        for member in members:
            for name in PANE_COUNTERS:
                totals[name] = totals.get(name, 0) + member.counters.get(name, 0)
        if all(m.reach_users or not m.reach_codes for m in members):
            totals["reach"] = len({u for m in members for u in m.reach_users})
        else:
            totals["reach"] = estimate([c for m in members for c in m.reach_codes])
        end = start + seconds * 1000
        final = end <= final_watermark_ms
        out[(campaign, channel, "hopping", seconds, start)] = KpiSnapshot(
            campaign_id=campaign,
            channel=channel,
            window_kind="hopping",
            window_seconds=seconds,
            window_start_ms=start,
            window_end_ms=end,
            is_final=final,
            version=sum(m.version for m in members) + int(final),
            counters=totals,
        )
    return out
