"""Contributions travel to stage two packed per target partition; nothing is lost, split
wrongly or reordered on the way."""

from __future__ import annotations

import orjson

from pipeline.partitioning import partition_for
from streams.worker import _PACK_RECORDS, _Packs


def test_packs_hold_every_contribution_once_on_its_campaigns_partition_in_order() -> None:
    packs = _Packs("by-campaign", 4)
    records = [{"c": f"campaign-{i % 7}", "src": "social:0", "o": i} for i in range(1_234)]
    for record in records:
        packs.add(record)
    received: dict[int, list[dict[str, object]]] = {}
    for topic, key, value, partition in packs.messages():
        assert topic == "by-campaign" and key is None and value is not None
        assert partition is not None
        pack = orjson.loads(value)["cs"]
        assert 0 < len(pack) <= _PACK_RECORDS
        received.setdefault(partition, []).extend(pack)
    for partition, got in received.items():
        expected = [r for r in records if partition_for(r["c"].encode(), 4) == partition]
        assert got == expected
    assert sum(len(v) for v in received.values()) == len(records)
