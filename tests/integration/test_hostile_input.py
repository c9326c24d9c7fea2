"""Hostile messages from a plain Kafka client (kcat) end as typed dead letters; the
worker keeps running and every valid event sent alongside is counted. An oversize message's
dead letter carries its original bytes whole on the dead-letter topic; the table keeps a
prefix with the original's length and SHA-256. A message over the ingest topic's 1 MiB is
refused to its producer by the broker."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import CompletedProcess

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import MessageSizeTooLargeError

from sinks import dead_letters, kpi_rows, open_backend

pytestmark = pytest.mark.integration
Run = Callable[..., CompletedProcess[str]]


def kcat(bootstrap: str, topic: str, payload: bytes, tmp_path: Path, key: str) -> None:
    exe = shutil.which("kcat")
    if exe is None:
        pytest.fail("kcat not found: `bash deploy/local/services.sh up` installs it", pytrace=False)
    path = tmp_path / "message.bin"
    path.write_bytes(payload)
    subprocess.run(
        [
            exe,
            "-P",
            "-b",
            bootstrap,
            "-t",
            topic,
            "-p",
            "0",
            "-k",
            key,
            "-X",
            "message.max.bytes=16777216",
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_hostile_messages_become_dead_letters_and_valid_ones_count(
    socialroi: Run, pipeline_env: dict[str, str], fresh_server_url: str, tmp_path: Path
) -> None:
    env = {**pipeline_env, "SOCIALROI_CLICKHOUSE__URL": fresh_server_url}
    assert socialroi(env, "topics").returncode == 0
    social, web = env["SOCIALROI_TOPICS__SOCIAL"], env["SOCIALROI_TOPICS__WEB"]
    bootstrap = env["SOCIALROI_KAFKA__BOOTSTRAP_SERVERS"]
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

    def like(i: int, **extra: object) -> bytes:
        return orjson.dumps(
            {
                "event_id": f"like-{i}",
                "event_type": "like",
                "channel": "Instagram",
                "campaign_id": "cmp-h",
                "user_id": f"u{i}",
                "event_time": (base + timedelta(seconds=i)).isoformat(),
                **extra,
            }
        )

    # 900,024 bytes: its dead letter (base64) is over aiokafka's default request size of 1 MB.
    big = b'{"big": "' + b"x" * 900_000 + b'", "tail": "\xc3\xa9"}'
    hostile = [
        (social, b'{"event_id": "x", "event_type": "like"', "bad_json"),
        (social, big, "oversize"),
        (social, like(100, count="ten"), "schema_violation"),
        (social, like(101, favourite_colour="blue"), "schema_violation"),
        (social, like(102, event_type="poke"), "unknown_event_type"),
        (social, like(103, event_time="2999-01-01T00:00:00Z"), "clock_skew"),
        (social, b"[1, 2, 3]", "not_an_object"),
        (
            web,
            b'{"event_id": "c1", "event_type": "conversion", "user_id": "u1", '
            b'"event_time": "2026-01-01T00:00:00Z", "order_id": "o1", '
            b'"revenue": NaN, "currency": "EUR"}',
            "bad_json",
        ),
    ]
    valid = 0
    for i, (topic, payload, _) in enumerate(hostile):
        kcat(bootstrap, social, like(i), tmp_path, key=f"u{i}")  # a valid event alongside
        valid += 1
        kcat(bootstrap, topic, payload, tmp_path, key="hostile")

    refused = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=16 * 1024 * 1024)
    try:
        with pytest.raises(MessageSizeTooLargeError):  # the broker says no: nothing is cut
            refused.send(social, b'{"big": "' + b"x" * (1024 * 1024) + b'"}').get(timeout=30)
    finally:
        refused.close()

    worker = socialroi(env, "worker", "--stop-when-idle", "5")
    assert worker.returncode == 0, worker.stderr[-3000:]
    assert "does not fit the dead-letter topic" not in worker.stderr  # no payload was cut

    backend = open_backend(fresh_server_url)
    backend.start()
    try:
        letters = dead_letters(backend)
        rows = kpi_rows(backend, window_seconds=60, window_kind="tumbling", campaign="cmp-h")
    finally:
        backend.close()
    assert Counter(d.reason for d in letters) == Counter(r for *_, r in hostile)
    by_reason = {d.reason: d for d in letters}
    oversize = by_reason["oversize"]
    assert oversize.payload == b'{"big": "' + b"x" * (65536 - 9)  # the table: a prefix
    assert (oversize.payload_bytes, oversize.complete) == (len(big), False)
    assert oversize.payload_sha256 == hashlib.sha256(big).hexdigest()
    assert f"{len(big)} bytes" in oversize.detail
    assert all(d.complete for d in letters if d is not oversize)
    # The topic: every dead letter with its original whole.
    on_topic = _read_all(bootstrap, env["SOCIALROI_TOPICS__DEAD_LETTERS"], len(hostile))
    payloads = {m["reason"]: base64.b64decode(m["payload_b64"]) for m in on_topic}
    assert payloads["oversize"] == big
    big_letter = next(m for m in on_topic if m["reason"] == "oversize")
    assert big_letter["payload_bytes"] == len(big) and big_letter["payload_complete"] is True
    assert big_letter["payload_sha256"] == oversize.payload_sha256
    assert (big_letter["topic"], big_letter["offset"]) == (social, oversize.offset)
    assert sorted(m["reason"] for m in on_topic) == sorted(r for *_, r in hostile)
    assert by_reason["clock_skew"].payload == like(103, event_time="2999-01-01T00:00:00Z")
    assert {d.topic for d in letters} == {social, web}
    assert sum(r["likes"] for r in rows) == valid
    assert {r["channel"] for r in rows} == {"instagram"}


def _read_all(bootstrap: str, topic: str, expected: int) -> list[dict[str, object]]:
    """Every message of ``topic`` (JSON values), once ``expected`` have arrived."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        found: list[dict[str, object]] = []
        for _ in range(30):
            for records in consumer.poll(timeout_ms=1000).values():
                found += [orjson.loads(r.value) for r in records]
            if len(found) >= expected:
                break
        return found
    finally:
        consumer.close()
