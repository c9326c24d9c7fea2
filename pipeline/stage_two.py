"""Stage two, per campaign: fold contributions into panes, decide finality, expire.

The counterpart of stage one's :class:`pipeline.stage_one.Ingestor`, free of Kafka: the
worker hands it a batch's contributions and each partition's store (the windows table's
keys of that partition), and writes what it returns. State values in a store are live
:class:`~pipeline.panes.PaneState` objects, or their encoded bytes as changelog recovery
leaves them (decoded on first use).

Finality: a pane is final once the partition's final watermark (the lowest heard over the
source partitions, :func:`pipeline.aggregate.final_watermark`) has passed its end; it is
then written once more, as final (or only as final, when the batch that changed it made
it final: :meth:`Aggregator.batch`), and leaves the state once the watermark is a further
allowed lateness past its end (a tombstone in the changelog). Panes waiting for either are
kept in an index by end time, so a batch looks only at the panes whose time has come rather
than scanning every pane.
"""

from __future__ import annotations

import heapq
import struct
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Protocol

from pipeline.aggregate import Contribution, final_watermark
from pipeline.ingest import NO_TIME
from pipeline.panes import PaneKey, PaneSize, PaneState, fold, is_pane_key, pane_sizes
from pipeline.ports import KpiSnapshot
from pipeline.windows import WindowSpec

__all__ = [
    "Aggregator",
    "PaneStore",
    "decode_position",
    "encode_position",
    "heard_key",
    "live",
    "position_key",
]

_POSITION: Final = struct.Struct("<qq")


def position_key(partition: int) -> str:
    """The key, among a partition's panes, of where stage two stands in that partition of
    the repartition topic (:func:`encode_position`). Two ``|``-separated fields, so it never
    meets a pane key (four)."""
    return f"next-offset|{partition}"


def heard_key(partition: int) -> str:
    """The key, among a partition's panes, of the source watermarks its heartbeats told
    (JSON ``{"topic-kind:partition": watermark}``): persisted, so that the final watermark
    after a restart or a handover is never computed from fewer sources than before."""
    return f"heard|{partition}"


def encode_position(first: int, unseen: int) -> bytes:
    """[first offset of the last batch, first offset not seen]: the first is where a replay
    starts if that batch's changes persisted only in part."""
    return _POSITION.pack(first, unseen)


def decode_position(value: bytes) -> tuple[int, int]:
    first, unseen = _POSITION.unpack(value)
    return first, unseen


class PaneStore(Protocol):
    """One partition's keys of the windows table; writes go to its changelog."""

    def get(self, key: str) -> Any | None: ...

    def put(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...


class _EndIndex:
    """Keys by a time, taken out in time order once a watermark passes it."""

    __slots__ = ("_heap", "_keys")

    def __init__(self) -> None:
        self._heap: list[int] = []
        self._keys: dict[int, set[str]] = {}

    def add(self, at: int, key: str) -> None:
        keys = self._keys.get(at)
        if keys is None:
            keys = self._keys[at] = set()
            heapq.heappush(self._heap, at)
        keys.add(key)

    def due(self, watermark: int) -> Iterable[tuple[int, set[str]]]:
        while self._heap and self._heap[0] <= watermark:
            at = heapq.heappop(self._heap)
            yield at, self._keys.pop(at)

    def __len__(self) -> int:
        return sum(len(keys) for keys in self._keys.values())


def live(store: PaneStore, encoded: str) -> PaneState | None:
    """The live state of a stored pane (decoding, once, what recovery left as bytes)."""
    value = store.get(encoded)
    if value is None or isinstance(value, PaneState):
        return value
    state = PaneState.decode(value)
    store.put(encoded, state)
    return state


class Aggregator:
    """Stage two for the partitions one worker holds."""

    def __init__(
        self,
        specs: Iterable[WindowSpec],
        lateness_ms: int,
        traffic: Iterable[str],
        partition_of: Callable[[str], int],
    ) -> None:
        self.sizes: tuple[PaneSize, ...] = pane_sizes(specs)
        self._size: dict[int, PaneSize] = {size.size_ms: size for size in self.sizes}
        self._lateness_ms = lateness_ms
        self._traffic = tuple(traffic)
        self._partition_of = partition_of
        self._pending: dict[int, _EndIndex] = defaultdict(_EndIndex)
        self._expiring: dict[int, _EndIndex] = defaultdict(_EndIndex)

    def forget(self) -> None:
        """Drop the indexes (after a rebalance): :meth:`index` rebuilds each partition's."""
        self._pending.clear()
        self._expiring.clear()

    def index(self, partition: int, data: Mapping[str, Any]) -> int:
        """Index the panes of ``partition`` found in ``data`` (a table's whole contents, as
        recovered); returns how many. Encoded states are decoded to read their final flag."""
        found = 0
        for encoded, value in data.items():
            if not is_pane_key(encoded):
                continue
            key = PaneKey.parse(encoded)
            if self._partition_of(key.campaign_id) != partition:
                continue
            state = value if isinstance(value, PaneState) else PaneState.decode(value)
            self._track(partition, key, encoded, state)
            found += 1
        return found

    def _track(self, partition: int, key: PaneKey, encoded: str, state: PaneState) -> None:
        if state.final:
            self._expiring[partition].add(key.end_ms + self._lateness_ms, encoded)
        else:
            self._pending[partition].add(key.end_ms, encoded)

    def batch(
        self,
        items: Iterable[Contribution],
        store_for: Callable[[int], PaneStore],
        heard: Mapping[int, Mapping[str, int]],
    ) -> tuple[list[KpiSnapshot], int, dict[int, int]]:
        """A whole batch: fold ``items``, then finalise each partition in ``heard`` (its
        source watermarks). Returns one snapshot per pane the batch changed or made final,
        taken after both (a pane both changed and made final is written once, as final,
        not also as the provisional row the final one would supersede in the same insert),
        the replays skipped, and each partition's watermark."""
        changed, replays = self._fold(items, store_for)
        watermarks = {}
        for partition, marks in heard.items():
            watermark, finals = self._finalise(partition, marks, store_for(partition))
            watermarks[partition] = watermark
            for key, state in finals:
                changed[key] = state
        return [self._snapshot(key, state) for key, state in changed.items()], replays, watermarks

    def fold(
        self, items: Iterable[Contribution], store_for: Callable[[int], PaneStore]
    ) -> tuple[list[KpiSnapshot], int]:
        """Fold a batch into its partitions' stores; the snapshots of the changed panes, and
        how many contributions the panes already included (replays, skipped)."""
        changed, replays = self._fold(items, store_for)
        return [self._snapshot(key, state) for key, state in changed.items()], replays

    def finalise(
        self, partition: int, heard: Mapping[str, int], store: PaneStore
    ) -> tuple[int, list[KpiSnapshot]]:
        """Write as final the panes the watermark has passed, drop those a further allowed
        lateness behind it. Returns the watermark (``NO_TIME`` until every traffic partition
        has been heard) and the final snapshots."""
        watermark, finals = self._finalise(partition, heard, store)
        return watermark, [self._snapshot(key, state) for key, state in finals]

    def _fold(
        self, items: Iterable[Contribution], store_for: Callable[[int], PaneStore]
    ) -> tuple[dict[PaneKey, PaneState], int]:
        def load(key: PaneKey) -> PaneState:
            store = store_for(self._partition_of(key.campaign_id))
            encoded = key.encode()
            state = live(store, encoded)
            if state is None:
                state = PaneState()
                store.put(encoded, state)
            return state

        changed, replays = fold(items, self.sizes, load)
        for key, state in changed.items():
            partition = self._partition_of(key.campaign_id)
            encoded = key.encode()
            store_for(partition).put(encoded, state)
            if not state.final:
                self._pending[partition].add(key.end_ms, encoded)
        return changed, replays

    def _finalise(
        self, partition: int, heard: Mapping[str, int], store: PaneStore
    ) -> tuple[int, list[tuple[PaneKey, PaneState]]]:
        watermark = final_watermark(heard, self._traffic)
        if watermark == NO_TIME:
            return watermark, []
        finals = []
        expiring = self._expiring[partition]
        for _, keys in self._pending[partition].due(watermark):
            for encoded in keys:
                state = live(store, encoded)
                if state is None or state.final:
                    continue  # expired already, or indexed twice
                state.final = True
                store.put(encoded, state)
                key = PaneKey.parse(encoded)
                finals.append((key, state))
                expiring.add(key.end_ms + self._lateness_ms, encoded)
        for _, keys in expiring.due(watermark):
            for encoded in keys:
                store.delete(encoded)
        return watermark, finals

    def _snapshot(self, key: PaneKey, state: PaneState) -> KpiSnapshot:
        return state.snapshot(key, self._size_of(key))

    def _size_of(self, key: PaneKey) -> PaneSize:
        # A pane of a size no longer configured (kept in state across a settings change)
        # is finished as a pane no window reads.
        return self._size.get(key.size_ms) or PaneSize(key.size_ms, False, ())
