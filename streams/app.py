"""The Faust app: group membership, tables and their changelogs, for one settings object.

Faust assigns the partitions and recovers the tables; the worker (``streams.worker``) reads
the assigned partitions itself and writes the tables through their stores.
"""

from __future__ import annotations

import faust

from pipeline.settings import Settings
from streams.kafka_config import faust_broker, faust_credentials

__all__ = ["build_app"]


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
        broker_commit_interval=1.0,
        table_standby_replicas=0,
        stream_buffer_maxsize=max(4096, 2 * s.worker.batch_max_events),
        # A batch sends thousands of small messages at once: let them travel in few requests.
        producer_max_batch_size=512 * 1024,
        autodiscover=False,
    )
