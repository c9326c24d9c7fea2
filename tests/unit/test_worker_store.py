"""The tables' local store: RocksDB holds only what the changelog holds (written after Kafka
acknowledged it, with its offset), live values stay in memory between batches and are
loaded again from RocksDB after every rebalance; the memory store stays available."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from faust.types import TP

from pipeline.panes import PaneState
from pipeline.settings import Settings, WorkerSettings
from streams.app import CompactedTable, build_app
from streams.batch_io import PartitionStore

CHANGELOG = "store-test-kpi-windows-changelog"


def _tables(tmp_path: Path, store: str) -> tuple[CompactedTable, CompactedTable]:
    settings = Settings(worker=WorkerSettings(app_id="store-test", data_dir=tmp_path, store=store))
    app = build_app(settings)
    state = app.Table("ingest-state", partitions=4)
    windows = app.Table("kpi-windows", partitions=4, value_type=bytes)
    assert isinstance(state, CompactedTable) and isinstance(windows, CompactedTable)
    return state, windows


def _rebalanced(table: CompactedTable) -> None:
    asyncio.run(table.on_recovery_completed(set(), set()))


def _written(store: PartitionStore, offset: int) -> None:
    """``flush``, then Kafka acknowledges the messages, the last at ``offset``."""
    sent = store.flush()
    store.persist({(sent[0][0], store.partition): offset})


def test_acknowledged_changes_reach_rocksdb_with_their_offset(tmp_path: Path) -> None:
    state, windows = _tables(tmp_path, "rocksdb")
    assert state.persistent and windows.persistent
    pane = PaneState()
    pane.counters[0] = 5
    pane.offsets["social.interactions:1"] = 99
    store = PartitionStore(windows, 1)
    store.put("c|fb|60000|0", pane)
    store.put("gone|1", b"x")
    _written(store, 41)
    store = PartitionStore(windows, 1)
    store.delete("gone|1")
    _written(store, 42)
    ingest = PartitionStore(state, 1)
    ingest.put("clock|social.interactions:1", [[7, 8]])
    _written(ingest, 3)

    assert windows.persisted_offset(TP(CHANGELOG, 1)) == 42
    assert windows.live(1)["c|fb|60000|0"] is pane  # live between batches
    _rebalanced(windows)
    _rebalanced(state)
    # loaded again from RocksDB: the encoded pane, the tombstone applied, JSON decoded
    assert windows.live(1) == {"c|fb|60000|0": pane.encode()}
    assert state.live(1) == {"clock|social.interactions:1": [[7, 8]]}
    assert windows.live(2) == {}  # another partition's keys stay apart


def test_a_change_the_changelog_does_not_hold_never_reaches_rocksdb(tmp_path: Path) -> None:
    _, windows = _tables(tmp_path, "rocksdb")
    store = PartitionStore(windows, 0)
    store.put("next-offset|0", b"kept")
    _written(store, 10)
    # a batch that crashed (or was abandoned) before its changelog was acknowledged
    store = PartitionStore(windows, 0)
    store.put("next-offset|0", b"lost")
    store.put("new|0", b"lost too")
    store.flush()
    assert windows.live(0) == {"next-offset|0": b"lost", "new|0": b"lost too"}
    _rebalanced(windows)
    assert windows.live(0) == {"next-offset|0": b"kept"}
    assert windows.persisted_offset(TP(CHANGELOG, 0)) == 10


def _event(partition: int, offset: int, key: str, value: bytes | None) -> Any:
    message = SimpleNamespace(
        tp=TP(CHANGELOG, partition),
        partition=partition,
        offset=offset,
        key=orjson.dumps(key),
        value=value,
    )
    return SimpleNamespace(message=message)


def test_recovery_applies_the_changelog_tail_on_top_of_the_local_state(tmp_path: Path) -> None:
    _, windows = _tables(tmp_path, "rocksdb")
    store = PartitionStore(windows, 3)
    store.put("a|3", b"1")
    store.put("b|3", b"1")
    _written(store, 20)
    # Faust's recovery reads from the persisted offset (that message again) to the end
    tail = [_event(3, 20, "a|3", b"1"), _event(3, 21, "a|3", b"2"), _event(3, 22, "b|3", None)]
    windows.data.apply_changelog_batch(tail, lambda k: k, lambda v: v)
    _rebalanced(windows)
    assert windows.live(3) == {"a|3": b"2"}
    assert windows.persisted_offset(TP(CHANGELOG, 3)) == 22


def test_the_memory_store_keeps_live_values_in_its_own_dict(tmp_path: Path) -> None:
    state, _ = _tables(tmp_path, "memory")
    assert not state.persistent
    store = PartitionStore(state, 2)
    store.put("clock|web.events:2", [[1, 2]])
    _written(store, 5)  # nothing written locally
    assert state.live(0) is state.live(2) is state.data.data  # type: ignore[attr-defined]
    assert state.data.data["clock|web.events:2"] == [[1, 2]]  # type: ignore[attr-defined]
    assert not (tmp_path / "store-test" / "v1" / "tables").exists()


def test_the_store_setting_accepts_rocksdb_or_memory() -> None:
    assert WorkerSettings().store == "rocksdb"
    with pytest.raises(ValueError):
        WorkerSettings(store="redis")
