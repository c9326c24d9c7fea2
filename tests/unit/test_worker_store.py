"""The worker's state store writes a batch's changes to the changelog in the order the
pure core's ``StateStore`` contract asks for: each key once, in the order of its last
write."""

from __future__ import annotations

from typing import Any

from streams.worker import _PartitionStore


class RecordingTable:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.sent: list[tuple[int, str, Any]] = []

    def send_changelog(self, partition: int, key: str, value: Any, **_: Any) -> Any:
        self.sent.append((partition, key, value))
        return None


def test_flush_sends_each_key_once_in_the_order_of_its_last_write() -> None:
    table = RecordingTable()
    store = _PartitionStore(table, 3)  # type: ignore[arg-type]
    store.put("user|a", [1])
    store.put("conversions|3", [-1, [[7]]])
    store.put("user|b", [2])
    store.put("user|a", [1, 2])  # pruned after the conversion was released
    store.delete("user|b")
    assert store.get("user|a") == [1, 2] and store.get("user|b") is None
    store.flush()
    assert table.sent == [
        (3, "conversions|3", [-1, [[7]]]),
        (3, "user|a", [1, 2]),
        (3, "user|b", None),
    ]
    store.flush()
    assert len(table.sent) == 3  # nothing changed since
