"""The dead-letter topic's messages: one JSON object per refused message, original whole.

Fields: ``reason`` and ``detail`` (why it was refused), ``topic``, ``partition`` and
``offset`` (where the worker read it; ``partition`` and ``offset`` are null for an event the
HTTP collector refused, which never reached an ingest topic, and ``topic`` is then the one
it was meant for, or "" when its type is unknown), ``kafka_ts_ms`` (the message's Kafka
timestamp; the collector's receiving time), ``payload_b64`` (the original bytes, base64),
``payload_bytes`` (their length) and ``payload_sha256`` (hex), ``payload_complete``.

An ingest topic takes messages up to ``INGEST_MAX_MESSAGE_BYTES`` and the dead-letter topic
up to ``ENVELOPE_MAX_MESSAGE_BYTES``, room for any of them in base64: the payload is always
complete then. Only an ingest topic an operator gave a larger ``max.message.bytes`` can hold
a message whose dead letter would not fit; that dead letter keeps the longest prefix that
fits, says ``payload_complete: false`` (length and digest still describe the whole), and a
warning names the topic to fix.

The worker's stage one also reads the dead-letter topic (kind :data:`COLLECTED_KIND`), to
put the letters the HTTP collector wrote (``partition`` null) into the ``dead_letters``
table: :func:`collected_letters`. Its own letters are in the table already.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from collections.abc import Sequence
from typing import Final

import orjson

from pipeline.ingest import NO_TIME, PartitionClock
from pipeline.ports import DeadLetterRow
from pipeline.stage_one import StateStore, clock_key
from streams.kafka_config import ENVELOPE_MAX_MESSAGE_BYTES, INGEST_MAX_MESSAGE_BYTES

__all__ = ["COLLECTED_KIND", "collected_letter", "collected_letters", "dead_letter_message"]

# The dead-letter topic as a source of stage one (its state keys: ``clock|<kind>:<p>``).
COLLECTED_KIND: Final = "dead-letters"

log = logging.getLogger(__name__)
# Room left in a dead-letter message for Kafka's record overhead and headers.
_RECORD_OVERHEAD = 1024


def dead_letter_message(
    *,
    reason: str,
    detail: str,
    topic: str,
    partition: int | None,
    offset: int | None,
    kafka_ts_ms: int,
    payload: bytes,
    key: bytes | None = None,
) -> bytes:
    """The dead-letter topic's JSON value for ``payload`` refused for ``reason``; ``key`` is
    the key it will be sent with (it counts towards the topic's size limit)."""
    envelope = {
        "reason": reason,
        "detail": detail,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "kafka_ts_ms": kafka_ts_ms,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload_complete": True,
        "payload_b64": base64.b64encode(payload).decode(),
    }
    value = orjson.dumps(envelope)
    room = ENVELOPE_MAX_MESSAGE_BYTES - _RECORD_OVERHEAD - len(key or b"")
    if len(value) <= room:
        return value
    log.warning(
        "a dead letter from %s (%d bytes) does not fit the dead-letter topic: its payload is "
        "cut; give %s max.message.bytes=%d, as `socialroi topics` does",
        topic,
        len(payload),
        topic,
        INGEST_MAX_MESSAGE_BYTES,
    )
    envelope["payload_complete"] = False
    envelope["payload_b64"] = ""
    spare = max(0, room - len(orjson.dumps(envelope)))
    envelope["payload_b64"] = base64.b64encode(payload[: spare // 4 * 3]).decode()
    return orjson.dumps(envelope)


def collected_letter(
    value: bytes | None, topic: str, partition: int, offset: int
) -> DeadLetterRow | None:
    """The ``dead_letters`` row of a letter the HTTP collector wrote to the dead-letter
    topic (``topic``), or ``None`` for one the worker wrote (its ``partition`` is set: the
    worker stored it when it wrote it) and for a message that is no dead letter (logged).

    A collector's letter never reached an ingest topic, so the row is keyed by where the
    letter itself is: the dead-letter topic, its partition and offset (a replay writes the
    same row; the topic holds the original whole). ``detail`` says which topic the event
    was meant for.
    """
    try:
        envelope = orjson.loads(value or b"")
        if not isinstance(envelope, dict):
            raise TypeError("not a JSON object")
        if envelope.get("partition") is not None:
            return None
        meant = envelope["topic"] or "no topic (unknown event type)"
        return DeadLetterRow(
            reason=str(envelope["reason"]),
            detail=f"refused by the HTTP collector, meant for {meant}: {envelope['detail']}",
            topic=topic,
            partition=partition,
            offset=offset,
            kafka_ts_ms=int(envelope["kafka_ts_ms"]),
            payload=base64.b64decode(envelope["payload_b64"], validate=True),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error) as exc:
        log.warning(
            "%s partition %d offset %d is not a dead letter (%s): not stored",
            topic,
            partition,
            offset,
            exc,
        )
        return None


def collected_letters(
    topic: str, partition: int, messages: Sequence[tuple[int, bytes | None]], store: StateStore
) -> list[DeadLetterRow]:
    """The collector's letters among consecutive ``messages`` (offset, value) of the
    dead-letter topic's ``partition``, as ``dead_letters`` rows. The partition's clock in
    stage one's ``store`` records how far it was read (where the worker resumes); it has
    no event time and no say in any watermark."""
    rows = [collected_letter(value, topic, partition, offset) for offset, value in messages]
    key = clock_key(f"{COLLECTED_KIND}:{partition}")
    clock = PartitionClock.from_state(store.get(key))
    clock.checkpoint(messages[-1][0], NO_TIME)
    store.put(key, clock.to_state())
    return [row for row in rows if row is not None]
