"""The dead-letter topic's message: the original whole, described by its length and digest."""

from __future__ import annotations

import base64
import hashlib
import logging

import orjson
import pytest

from pipeline.ingest import NO_TIME
from streams.dead_letters import (
    COLLECTED_KIND,
    collected_letters,
    dead_letter_message,
)
from streams.kafka_config import ENVELOPE_MAX_MESSAGE_BYTES, INGEST_MAX_MESSAGE_BYTES


def letter(payload: bytes, key: bytes | None = None) -> dict[str, object]:
    value = dead_letter_message(
        reason="oversize",
        detail=f"{len(payload)} bytes",
        topic="social.interactions",
        partition=2,
        offset=41,
        kafka_ts_ms=1_790_000_000_123,
        payload=payload,
        key=key,
    )
    assert len(value) + len(key or b"") <= ENVELOPE_MAX_MESSAGE_BYTES - 1024
    parsed: dict[str, object] = orjson.loads(value)
    return parsed


def test_an_ingest_message_of_the_largest_size_fits_whole() -> None:
    payload = bytes(range(256)) * (INGEST_MAX_MESSAGE_BYTES // 256 - 1) + b"\xff" * 200
    key = b"k" * 200  # key and value together stay within the ingest topic's limit
    got = letter(payload, key)
    assert base64.b64decode(str(got["payload_b64"])) == payload
    assert got["payload_bytes"] == len(payload)
    assert got["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert got["payload_complete"] is True
    assert (got["topic"], got["partition"], got["offset"]) == ("social.interactions", 2, 41)


def test_an_empty_payload_is_complete() -> None:
    got = letter(b"")
    assert (got["payload_b64"], got["payload_bytes"], got["payload_complete"]) == ("", 0, True)


def test_a_message_from_a_larger_topic_is_cut_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    payload = b"y" * (2 * INGEST_MAX_MESSAGE_BYTES)  # only if an operator raised the topic's
    with caplog.at_level(logging.WARNING):
        got = letter(payload, b"user-1")
    kept = base64.b64decode(str(got["payload_b64"]))
    assert got["payload_complete"] is False
    assert payload.startswith(kept) and len(kept) > 1_500_000
    assert got["payload_bytes"] == len(payload)
    assert got["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert "max.message.bytes=1048576" in caplog.text


def test_the_collectors_letters_become_table_rows_at_their_place_on_the_topic() -> None:
    def sent(partition: int | None, payload: bytes, topic: str = "web.events") -> bytes:
        return dead_letter_message(
            reason="schema_violation", detail="shoe_size: unknown field", topic=topic,
            partition=partition, offset=None if partition is None else 7,
            kafka_ts_ms=1_790_000_000_000, payload=payload,
        )  # fmt: skip

    store: dict[str, object] = {}

    class Store:
        def get(self, key: str) -> object | None:
            return store.get(key)

        def put(self, key: str, value: object) -> None:
            store[key] = value

        def delete(self, key: str) -> None:
            store.pop(key, None)

    messages = [
        (10, sent(None, b'{"shoe_size": 44}')),
        (11, sent(3, b"[1]")),  # the worker's own: stored when it wrote it
        (12, b"not a dead letter"),
        (13, sent(None, b"\xff", topic="")),
    ]
    rows = collected_letters("socialroi.dead-letters", 1, messages, Store())
    assert [(r.topic, r.partition, r.offset, r.payload) for r in rows] == [
        ("socialroi.dead-letters", 1, 10, b'{"shoe_size": 44}'),
        ("socialroi.dead-letters", 1, 13, b"\xff"),
    ]
    assert rows[0].reason == "schema_violation" and rows[0].kafka_ts_ms == 1_790_000_000_000
    assert rows[0].detail.startswith("refused by the HTTP collector, meant for web.events: ")
    assert "meant for no topic" in rows[1].detail
    # how far the partition was read, for where the worker resumes
    assert store == {f"clock|{COLLECTED_KIND}:1": [[13, NO_TIME]]}
