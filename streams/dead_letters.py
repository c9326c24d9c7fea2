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
"""

from __future__ import annotations

import base64
import hashlib
import logging

import orjson

from streams.kafka_config import ENVELOPE_MAX_MESSAGE_BYTES, INGEST_MAX_MESSAGE_BYTES

__all__ = ["dead_letter_message"]

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
