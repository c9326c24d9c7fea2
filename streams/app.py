"""The Faust app: group membership, tables and their changelogs, for one settings object.

Faust assigns the partitions and recovers the tables; the worker (``streams.worker``) reads
the assigned partitions itself and writes the tables through their live values
(:meth:`CompactedTable.live`) and their changelogs. The worker is a static group member
(``streams.kafka_config.faust_membership``), and every table's changelog is created
compacted (``CHANGELOG_TOPIC_CONFIG``) by Faust when the worker starts.

Where the state lives (``SOCIALROI_WORKER__STORE``):

- ``rocksdb`` (default): Faust's RocksDB store through ``rocksdict``, one database per table
  partition under ``<data dir>/<app id>/``, holding the changelog's bytes and the offset of
  the last changelog message they include (Faust's "persisted offset"). Recovery reads the
  changelog from that offset only, so a restart reads the tail written since, not the whole
  changelog. The worker keeps live values (``PaneState`` objects, JSON-able lists and dicts)
  in memory between batches, per partition, and RocksDB holds the encoded bytes.
- ``memory``: Faust's in-memory store, for tests; every assignment reads the whole
  changelog again, and the live values are the store's own dict.

Exactness with a persistent store. The worker's exactly-once effect relies on the state
after a restart or a rebalance being what the changelog holds (it then replays its last
batch). RocksDB is therefore written only with what the changelog already holds:

1. by Faust's recovery, which applies changelog messages and records their offset;
2. by :meth:`CompactedTable.persist`, after Kafka acknowledged a batch's changelog
   messages: the same key and value bytes, and the offset of the last of them, in one
   RocksDB write batch (atomic, also after a crash of the machine: the write-ahead log
   recovers whole write batches).

So the local store never leads the changelog: at any crash it equals the changelog up to
its persisted offset (or a little past it, if a recovery batch was applied but its offset
not yet recorded, which is harmless: messages hold whole values, so reading them again
gives the same state), and recovery reads the changelog from there to its end. The live
values are never persisted on their own: a change the changelog does not hold (a batch that
crashed, or one abandoned while ClickHouse is down) never reaches RocksDB. After every
rebalance the live values are dropped and loaded again from RocksDB, once recovery has
brought it up to the changelog's end: the worker then starts from what the changelog holds,
as it did with the memory store. One assumption: while a partition is this worker's, only
this worker writes its changelog (a rebalance waits for the batch under way before the
partition moves); a message another process wrote meanwhile would be in the changelog but
not in the local store, until the store is deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import faust
import rocksdict
from faust.stores.rocksdb import Store as RocksDBStore
from faust.types import TP

from pipeline.settings import Settings
from streams.kafka_config import (
    CHANGELOG_TOPIC_CONFIG,
    ENVELOPE_MAX_MESSAGE_BYTES,
    faust_broker,
    faust_credentials,
    faust_membership,
)

__all__ = ["CompactedTable", "build_app"]

# RocksDB, per table partition: the worker reads a database only to load its live values
# after a rebalance and writes it once per batch, so a small block cache and memtable do
# (Faust's defaults are a 2 GiB cache and up to 3 x 64 MiB of memtables per database).
_ROCKSDB_OPTIONS = {
    "block_cache_size": 8 * 1024 * 1024,
    "write_buffer_size": 8 * 1024 * 1024,
    "max_write_buffer_number": 2,
}


class CompactedTable(faust.Table[Any, Any]):
    """A Faust table whose changelog topic is created with ``CHANGELOG_TOPIC_CONFIG``
    (Faust's own tables ask only for ``cleanup.policy=compact``: segments of 1 GiB would
    then keep a restart reading a changelog that compaction has not touched)."""

    # Faust's services log under their class's module: keep this one with Faust's tables
    # (quiet below WARNING, see streams.logs) rather than under ``streams.app``.
    logger = logging.getLogger("faust.tables.compacted")

    def __init__(
        self, app: faust.App, *, changelog_prefix: str | None = None, **kwargs: Any
    ) -> None:
        # The worker names changelogs after its app id, not the process's group (Faust's
        # default): the stage's state is the same whether one process runs both stages
        # or each runs in its own (``WorkerSettings.group_id``).
        self._changelog_prefix = changelog_prefix or app.conf.id
        configs = {**CHANGELOG_TOPIC_CONFIG, **(kwargs.pop("extra_topic_configs", None) or {})}
        if str(app.conf.store).startswith("rocksdb:"):
            kwargs["options"] = {**_ROCKSDB_OPTIONS, **(kwargs.get("options") or {})}
        super().__init__(app, extra_topic_configs=configs, **kwargs)
        # With RocksDB: the live values per partition, loaded on first use after a
        # rebalance (see the module docstring).
        self._live: dict[int, dict[Any, Any]] = {}

    def _changelog_topic_name(self) -> str:
        return f"{self._changelog_prefix}-{self.name}-changelog"

    @property
    def persistent(self) -> bool:
        """True when the state is in RocksDB, False for the in-memory store."""
        return isinstance(self.data, RocksDBStore)

    def live(self, partition: int) -> dict[Any, Any]:
        """The live values of ``partition``'s keys, to read and change in place; changes
        reach the store only through the changelog and :meth:`persist`.

        With the memory store this is the store's own dict, every partition's keys in one
        (its mapping methods are Python code around every read and write, 6% of the
        worker's main thread, profiled); with RocksDB a dict per partition, loaded from
        RocksDB on first use after a rebalance and dropped at the next one, so memory holds
        the assigned partitions' state and no more."""
        if not self.persistent:
            data = self.data.data
            assert isinstance(data, dict), type(data)
            return data
        found = self._live.get(partition)
        if found is None:
            found = self._live[partition] = self._load(partition)
        return found

    def _load(self, partition: int) -> dict[Any, Any]:
        store = self.data
        assert isinstance(store, RocksDBStore)
        db = store._db_for_partition(partition)
        decode_key, decode_value = store._decode_key, store._decode_value
        return {
            decode_key(key): decode_value(value)
            for key, value in db.items()
            if key != store.offset_key
        }

    def persist(
        self, partition: int, messages: Iterable[tuple[bytes, bytes | None]], offset: int
    ) -> None:
        """Write to RocksDB changelog messages Kafka has acknowledged (``offset``: that of
        the last of them in ``partition``), with that offset as the persisted one, in one
        atomic write. Nothing to do with the memory store."""
        store = self.data
        if not isinstance(store, RocksDBStore):
            return
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in messages:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(store.offset_key, str(offset).encode())
        store._db_for_partition(partition).write(batch)

    async def on_rebalance(
        self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP], generation_id: int = 0
    ) -> None:
        # Dropped before Faust closes revoked databases and recovers the assigned ones.
        self._live.clear()
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        # Anything loaded while recovery was applying the changelog is loaded again.
        self._live.clear()
        await super().on_recovery_completed(active_tps, standby_tps)


def build_app(settings: Settings) -> faust.App:
    """A Faust app for these settings; no broker connection until the worker starts."""
    s = settings
    return faust.App(
        s.worker.group_id,
        broker=faust_broker(s.kafka),
        broker_credentials=faust_credentials(s.kafka),
        store=f"{s.worker.store}://",
        # The databases' files carry only the table's name: one directory per group keeps
        # two apps (or two stages' processes) sharing a data dir from reading each other's.
        datadir=str(s.worker.data_dir / s.worker.group_id),
        web_enabled=False,
        topic_partitions=s.kafka.partitions,
        topic_replication_factor=s.kafka.replication_factor,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        # The worker commits what its state has seen after every batch (Offsets.commit_seen);
        # Faust's timer commits only what Faust delivered itself, which the worker has also
        # committed. Every 1 s, that timer overlapped whenever a batch held the event loop
        # for a second ("Timer commit is overlapping"): 10 s leaves it as a backstop.
        broker_commit_interval=10.0,
        table_standby_replicas=0,
        Table=CompactedTable,
        # Faust's leader election topic: nothing here runs "on the leader only", and a
        # topic nobody reads would be created with the broker's defaults.
        topic_disable_leader=True,
        **faust_membership(s.worker),
        stream_buffer_maxsize=max(4096, 2 * s.worker.batch_max_events),
        # A batch sends thousands of small messages at once: let them travel in few requests.
        producer_max_batch_size=512 * 1024,
        # A dead letter carries its original whole: up to the envelope topics' limit, above
        # aiokafka's default of 1 MB.
        producer_max_request_size=ENVELOPE_MAX_MESSAGE_BYTES,
        autodiscover=False,
    )
