"""What ``socialroi bench`` measures with, from outside the worker under test.

Each probe reads something the worker exposes anyway (its ``/metrics``, its table's
changelog topic, ``/proc/<pid>/status``) or repeats the worker's input path with nothing
else around it (a bare aiokafka consumer), so the worker runs unmodified in its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka import KafkaConsumer
from kafka.structs import TopicPartition as KafkaTopicPartition
from prometheus_client.parser import text_string_to_metric_families

from pipeline.panes import PaneState, is_pane_key
from pipeline.partitioning import partition_for
from pipeline.settings import Settings
from streams.kafka_config import aiokafka_consumer_options, kafka_python_options
from streams.producer import OutgoingMessage

__all__ = [
    "Scrape",
    "StateSize",
    "end_offsets",
    "end_offsets_total",
    "fresh_events",
    "peak_rss_bytes",
    "raw_consume",
    "rss_bytes",
    "scrape",
    "table_state_size",
]


@dataclass(frozen=True, slots=True)
class Scrape:
    """The figures of one ``/metrics`` answer that the bench follows."""

    at: float  # time.monotonic() when the answer arrived
    wall: float  # time.time() at the same moment
    consumed_ingest: float  # socialroi_events_consumed_total, stage="ingest", all topics
    handled: dict[str, float]  # stage -> events in finished batches (socialroi_batch_events_sum)
    freshness: float  # socialroi_last_write_event_time_seconds
    assigned: float  # socialroi_assigned_partitions
    watermark: float = 0.0  # socialroi_watermark_seconds (lowest source watermark)


def scrape(port: int, timeout: float = 2.0) -> Scrape | None:
    """One scrape of the worker's ``/metrics``; ``None`` while it does not answer yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
            text = r.read().decode()
    except OSError:
        return None
    at, wall = time.monotonic(), time.time()
    consumed = freshness = assigned = watermark = 0.0
    handled: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "socialroi_events_consumed_total":
                if sample.labels.get("stage") == "ingest":
                    consumed += sample.value
            elif sample.name == "socialroi_batch_events_sum":
                stage = sample.labels.get("stage", "")
                handled[stage] = handled.get(stage, 0.0) + sample.value
            elif sample.name == "socialroi_last_write_event_time_seconds":
                freshness = sample.value
            elif sample.name == "socialroi_assigned_partitions":
                assigned = sample.value
            elif sample.name == "socialroi_watermark_seconds":
                watermark = sample.value
    return Scrape(at, wall, consumed, handled, freshness, assigned, watermark)


def _status_bytes(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set size of a live process (``VmHWM``), in bytes; 0 if unreadable."""
    return _status_bytes(pid, "VmHWM:")


def rss_bytes(pid: int) -> int:
    """Resident set size of a live process now (``VmRSS``), in bytes; 0 if unreadable."""
    return _status_bytes(pid, "VmRSS:")


def _consumer(settings: Settings, **extra: Any) -> KafkaConsumer:
    return KafkaConsumer(
        enable_auto_commit=False,
        consumer_timeout_ms=2000,
        **extra,
        **kafka_python_options(settings.kafka),
    )


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """Log end offset of every partition of ``topic``."""
    consumer = _consumer(settings)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [KafkaTopicPartition(topic, p) for p in parts]
        return {tp.partition: end for tp, end in consumer.end_offsets(tps).items()} if tps else {}
    finally:
        consumer.close()


def end_offsets_total(settings: Settings, topic: str) -> int:
    """Messages in every partition of ``topic`` (fresh topics start at offset 0)."""
    return sum(end_offsets(settings, topic).values())


async def _read_last_values(
    settings: Settings, topic: str, ends: dict[int, int]
) -> dict[bytes, bytes | None]:
    latest: dict[bytes, bytes | None] = {}
    remaining = {p: end for p, end in ends.items() if end > 0}
    if not remaining:
        return latest
    consumer = AIOKafkaConsumer(**aiokafka_consumer_options(settings.kafka))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in remaining]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + 300
        while remaining and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=50_000)
            for tp, records in batches.items():
                end = remaining.get(tp.partition)
                if end is None:
                    continue
                for record in records:
                    if record.offset < end and record.value:
                        latest[record.key] = record.value
                if records and records[-1].offset + 1 >= end:
                    del remaining[tp.partition]
                    consumer.pause(tp)
        if remaining:
            raise RuntimeError(f"could not read {topic} to its end in 300s")
    finally:
        await consumer.stop()
    return latest


async def _raw_consume(settings: Settings, topics: list[str], expected: int) -> float:
    kafka = settings.kafka
    consumer = AIOKafkaConsumer(**aiokafka_consumer_options(settings.kafka))
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(kafka.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        count = 0
        began = time.monotonic()
        deadline = began + 300
        while count < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"raw consumer read {count} of {expected} messages in 300s")
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batches.values():
                for record in records:
                    # the simulator's invalid messages fail to decode: that is work too
                    with contextlib.suppress(orjson.JSONDecodeError):
                        orjson.loads(record.value)
                    count += 1
        return time.monotonic() - began
    finally:
        await consumer.stop()


def raw_consume(settings: Settings, topics: list[str], expected: int) -> float:
    """Seconds a bare aiokafka consumer (no group) takes to read and JSON-decode ``expected``
    messages from the start of ``topics``, counted from the first fetch request (after
    connecting and seeking), so the first round trip is included."""
    return asyncio.run(_raw_consume(settings, topics, expected))


@dataclass(frozen=True, slots=True)
class StateSize:
    """Keys a Faust table held during a run and the JSON bytes of their last values."""

    keys: int
    value_bytes: int
    counters_offsets_bytes: int  # counters, offsets and the final flag alone
    reach_bytes: int  # the reach sketch alone
    keys_with_reach: int


def table_state_size(settings: Settings, changelog: str, ends: dict[int, int]) -> StateSize:
    """Read a table's changelog topic up to ``ends`` (partition -> offset, taken when the
    state was of interest): every key the table held, at the last value written for it.
    Tombstones are skipped: a window that left the state once it was final still counts,
    at its final size, so the figure depends on the events alone and not on how far the
    watermark had got when the drain ended. Sizes are of the binary panes the changelog
    holds, which is what recovery reads; Python objects in the worker's memory are larger."""
    latest = asyncio.run(_read_last_values(settings, changelog, ends))
    keys = value_bytes = core = reach = with_reach = 0
    for key, value in latest.items():
        if not value or not is_pane_key(orjson.loads(key)):
            continue
        state = PaneState.decode(value)
        keys += 1
        value_bytes += len(value)
        sketch = len(state.reach.to_bytes()) if state.reach is not None else 0
        core += len(value) - sketch
        if state.reach is not None:
            with_reach += 1
            reach += sketch
    return StateSize(keys, value_bytes, core, reach, with_reach)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def fresh_events(
    topic: str, partitions: int, campaign: str, stamps: list[int], users: int = 1000
) -> Iterator[OutgoingMessage]:
    """Valid ``like`` events for ``campaign`` whose ``event_time`` is the wall clock at the
    moment each is handed to the producer (appended to ``stamps``, in ms)."""
    seq = 0
    while True:
        now = int(time.time() * 1000)
        seq += 1
        user = f"bench-u{seq % users}"
        body = {
            "event_id": f"{campaign}-{seq}",
            "event_type": "like",
            "event_time": _iso(now),
            "campaign_id": campaign,
            "channel": "facebook",
            "user_id": user,
        }
        key = user.encode()
        stamps.append(now)
        yield OutgoingMessage(topic, key, orjson.dumps(body), partition_for(key, partitions))


def latencies(stamps: Iterable[int], scrapes: list[Scrape]) -> list[float]:
    """Per event: seconds from its event time (= production time) to the first scrape whose
    freshness gauge had reached it; events never reached are left out."""
    ordered = sorted(stamps)
    out: list[float] = []
    i = 0
    for s in scrapes:
        reached_ms = s.freshness * 1000
        while i < len(ordered) and ordered[i] <= reached_ms:
            out.append(max(0.0, s.wall - ordered[i] / 1000))
            i += 1
    return out
