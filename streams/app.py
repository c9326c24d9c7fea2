"""The Faust app: group membership, tables and their changelogs, for one settings object.

Faust assigns the partitions and recovers the tables; the worker (``streams.worker``) reads
the assigned partitions itself and writes the tables through their stores. The worker is a
static group member (``streams.kafka_config.faust_membership``), and every table's
changelog is created compacted (``CHANGELOG_TOPIC_CONFIG``) by Faust when the worker starts.
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from pipeline.settings import Settings
from streams.kafka_config import (
    CHANGELOG_TOPIC_CONFIG,
    faust_broker,
    faust_credentials,
    faust_membership,
)

__all__ = ["CompactedTable", "build_app"]


class CompactedTable(faust.Table[Any, Any]):
    """A Faust table whose changelog topic is created with ``CHANGELOG_TOPIC_CONFIG``
    (Faust's own tables ask only for ``cleanup.policy=compact``: segments of 1 GiB would
    then keep a restart reading a changelog that compaction has not touched)."""

    # Faust's services log under their class's module: keep this one with Faust's tables
    # (quiet below WARNING, see streams.logs) rather than under ``streams.app``.
    logger = logging.getLogger("faust.tables.compacted")

    def __init__(self, app: faust.App, **kwargs: Any) -> None:
        configs = {**CHANGELOG_TOPIC_CONFIG, **(kwargs.pop("extra_topic_configs", None) or {})}
        super().__init__(app, extra_topic_configs=configs, **kwargs)


def build_app(settings: Settings) -> faust.App:
    """A Faust app for these settings; no broker connection until the worker starts."""
    s = settings
    return faust.App(
        s.worker.app_id,
        broker=faust_broker(s.kafka),
        broker_credentials=faust_credentials(s.kafka),
        store="memory://",
        datadir=str(s.worker.data_dir),
        web_enabled=False,
        topic_partitions=s.kafka.partitions,
        topic_replication_factor=s.kafka.replication_factor,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        # The worker commits what its state has seen after every batch (Worker._commit_seen);
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
        autodiscover=False,
    )
