"""Contributions travel to stage two packed per target partition; nothing is lost, split
wrongly or reordered on the way. Changed state reaches the changelog as JSON."""

from __future__ import annotations

import orjson

from pipeline.hll import Reach, user_hash
from pipeline.panes import PaneState
from pipeline.partitioning import partition_for
from pipeline.stage_two import decode_position, encode_position, live
from streams.batch_io import PACK_RECORDS, Packs, PartitionStore


def test_packs_hold_every_contribution_once_on_its_campaigns_partition_in_order() -> None:
    packs = Packs("by-campaign", 4)
    records = [{"c": f"campaign-{i % 7}", "src": "social:0", "o": i} for i in range(1_234)]
    for record in records:
        packs.add(record)
    received: dict[int, list[dict[str, object]]] = {}
    for topic, key, value, partition in packs.messages():
        assert topic == "by-campaign" and key is None and value is not None
        assert partition is not None
        pack = orjson.loads(value)["cs"]
        assert 0 < len(pack) <= PACK_RECORDS
        received.setdefault(partition, []).extend(pack)
    for partition, got in received.items():
        expected = [r for r in records if partition_for(r["c"].encode(), 4) == partition]
        assert got == expected
    assert sum(len(v) for v in received.values()) == len(records)


class _Changelog:
    def get_topic_name(self) -> str:
        return "kpi-windows-changelog"


class _MemoryStore:
    def __init__(self) -> None:
        self.data: dict[str, object] = {}


class _Table:
    """The two things ``PartitionStore`` uses of a Faust table with a memory store."""

    def __init__(self) -> None:
        self.data = _MemoryStore()
        self.changelog_topic = _Changelog()


def test_live_panes_reach_the_changelog_in_their_binary_form() -> None:
    state = PaneState()
    state.counters[0] = 3
    state.offsets["social.interactions:1"] = 41
    state.reach = Reach()
    for user in range(200):  # past the exact limit: a sketch
        state.reach.add(user_hash(f"u{user}"))
    table = _Table()
    store = PartitionStore(table, 2)  # type: ignore[arg-type]
    store.put("c|instagram|60000|0", state)
    store.put("next-offset|2", encode_position(10, 17))
    store.put("clock|social.interactions:2", [[1, 2]])  # the ingest table's JSON values
    store.delete("gone")
    sent = store.flush()
    assert table.data.data["c|instagram|60000|0"] is state  # kept live in memory
    by_key = {orjson.loads(key): value for _topic, key, value, _part in sent}
    assert {(t, p) for t, _k, _v, p in sent} == {("kpi-windows-changelog", 2)}
    assert by_key["gone"] is None and decode_position(by_key["next-offset|2"]) == (10, 17)
    assert orjson.loads(by_key["clock|social.interactions:2"]) == [[1, 2]]
    written = by_key["c|instagram|60000|0"]
    assert written == state.encode()
    # what recovery puts in the table (the raw bytes) decodes to the same state, once
    table.data.data["c|instagram|60000|0"] = written
    recovered = live(store, "c|instagram|60000|0")
    assert recovered is not None and recovered.counters == state.counters
    assert recovered.offsets == state.offsets and recovered.reach is not None
    assert recovered.reach.count() == state.reach.count()
    assert live(store, "c|instagram|60000|0") is recovered
    store.flush()
    assert store.flush() == []  # written once
