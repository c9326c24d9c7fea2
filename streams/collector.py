"""HTTP collector: a site's tag and webhooks post events; valid ones go to Kafka.

``POST /v1/events`` takes one JSON object, a JSON array of objects, or NDJSON (one object per
line), with ``Authorization: Bearer <token>`` and ``Content-Type`` ``application/json``,
``application/x-ndjson`` or ``text/plain`` (read as JSON too: a browser's ``sendBeacon``
sends that without a CORS preflight).

Each event is judged alone: the valid ones go to their ingest topic, each invalid one goes
to the dead-letter topic with its reason and its bytes as sent (an NDJSON line, the whole
body for a single object, the element re-encoded for an array), and the answer lists the
refused ones (the worker stores their letters in the ``dead_letters`` table:
``streams.dead_letters.collected_letters``), each with ``index`` (0-based among the
request's events), ``line`` (1-based line of an NDJSON body, else null), ``reason`` and
``detail``. Every message is acknowledged by Kafka (``acks=all``) before the answer:

* 202 ``{"accepted": n, "rejected": []}``: every event accepted;
* 207 ``{"accepted": n, "rejected": [...]}``: the valid ones accepted, the listed ones not;
* 400 ``{"error": "invalid_events", "accepted": 0, "rejected": [...]}``: none accepted.

A client that retries a batch after a 503 may send valid events twice: the worker counts an
``event_id`` once. A body that is not JSON at all (or an array that does not parse) is 400
``bad_json``, with nothing produced. Errors: 401 no token, 403 wrong token, 413 body over
the limit, 415 another content type, 503 Kafka unavailable (nothing is promised then).
An event larger than the ingest topics take (``INGEST_MAX_MESSAGE_BYTES``, possible only
with a larger body limit) is refused as oversize without a dead letter.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from kafka.errors import KafkaError

from pipeline.contract import Contract, Rejection, RejectReason
from pipeline.files import kind_of_event_type
from pipeline.settings import Settings
from streams.dead_letters import dead_letter_message
from streams.health import ProduceReadiness
from streams.kafka_config import INGEST_MAX_MESSAGE_BYTES
from streams.metrics import CollectorMetrics
from streams.producer import EventProducer, OutgoingMessage, topic_for_kind

__all__ = ["build_collector"]

log = logging.getLogger(__name__)
_MAX_EVENTS = 10_000


def _error(status: int, reason: str, detail: str, **extra: Any) -> web.Response:
    body = {"error": reason, "detail": detail, **extra}
    return web.json_response(body, status=status, dumps=lambda o: orjson.dumps(o).decode())


@dataclass(frozen=True, slots=True)
class _Item:
    """One event of a request: its parsed JSON (``error`` says why there is none), its bytes
    as sent, and its line in an NDJSON body."""

    value: Any
    raw: bytes
    line: int | None
    error: str = ""


@dataclass(frozen=True, slots=True)
class _Refusal:
    """Why an event is refused; ``topic`` is the one it was meant for ("" if unknown)."""

    topic: str
    reason: str
    detail: str


def _parse(body: bytes) -> list[_Item]:
    """The request's events. Raises ``JSONDecodeError`` when the body is no JSON value and no
    NDJSON either (an array that does not parse cannot be split into events)."""
    stripped = body.strip()
    if stripped.startswith(b"[") or stripped.startswith(b"{"):
        try:
            parsed = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            if not stripped.startswith(b"{"):
                raise
        else:
            if isinstance(parsed, list):
                return [_Item(value, orjson.dumps(value), None) for value in parsed]
            return [_Item(parsed, stripped, None)]
    items = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        line = line.rstrip(b"\r")
        if not line.strip():
            continue
        try:
            items.append(_Item(orjson.loads(line), line, number))
        except orjson.JSONDecodeError as exc:
            items.append(_Item(None, line, number, str(exc)[:200]))
    if items and all(item.error for item in items):
        raise orjson.JSONDecodeError(items[0].error, "", 0)
    return items


def build_collector(
    settings: Settings,
    producer: EventProducer,
    metrics: CollectorMetrics,
    readiness: ProduceReadiness,
) -> web.Application:
    """The aiohttp application; the caller runs it and owns the producer's lifecycle.
    ``readiness`` hears whether Kafka acknowledged each request's events."""
    if settings.collector.token is None:
        raise ValueError("the collector needs a token: set SOCIALROI_COLLECTOR__TOKEN")
    token = settings.collector.token.get_secret_value().encode()
    contract = Contract(
        max_message_bytes=settings.limits.max_message_bytes,
        max_future_skew_ms=settings.windows.max_future_skew_seconds * 1000,
    )
    kinds = kind_of_event_type()
    topics = topic_for_kind(settings)
    dead_topic = settings.topics.dead_letters
    limit = settings.collector.max_body_bytes

    async def events(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return _error(401, "unauthorized", "send Authorization: Bearer <token>")
        if not hmac.compare_digest(auth[7:].strip().encode(), token):
            return _error(403, "forbidden", "wrong token")
        if request.content_length is not None and request.content_length > limit:
            return _error(413, "oversize", f"body over {limit} bytes")
        ctype = request.content_type
        if ctype not in {"application/json", "application/x-ndjson", "text/plain"}:
            return _error(
                415,
                "unsupported_media_type",
                "send application/json, application/x-ndjson or text/plain (read as JSON)",
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "oversize", f"body over {limit} bytes")
        try:
            items = _parse(body)
        except orjson.JSONDecodeError as exc:
            return _error(400, "bad_json", str(exc)[:200])
        if not items:
            return _error(400, "empty", "no events in body")
        if len(items) > _MAX_EVENTS:
            return _error(413, "too_many_events", f"at most {_MAX_EVENTS} per request")
        now_ms = int(time.time() * 1000)
        messages: list[OutgoingMessage] = []
        letters: list[OutgoingMessage] = []
        rejected: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            judged = judge(item, now_ms)
            if isinstance(judged, OutgoingMessage):
                messages.append(judged)
                continue
            reason, detail = judged.reason, judged.detail
            rejected.append({"index": index, "line": item.line, "reason": reason, "detail": detail})
            if len(item.raw) <= INGEST_MAX_MESSAGE_BYTES:
                letter = dead_letter_message(
                    reason=reason,
                    detail=detail,
                    topic=judged.topic,
                    partition=None,
                    offset=None,
                    kafka_ts_ms=now_ms,
                    payload=item.raw,
                )
                letters.append(OutgoingMessage(dead_topic, None, letter))
        try:
            await asyncio.to_thread(producer.send_confirmed, messages + letters)
        except KafkaError as exc:
            log.warning("collector could not produce: %s", type(exc).__name__)
            readiness.refused(type(exc).__name__)
            return _error(503, "kafka_unavailable", "try again later")
        readiness.acknowledged()
        for message in messages:
            metrics.produced.labels(message.topic).inc()
        for bad in rejected:
            metrics.dead_letters.labels(bad["reason"]).inc()
        if not messages:
            return _error(
                400,
                "invalid_events",
                f"{len(rejected)} invalid; nothing accepted",
                accepted=0,
                rejected=rejected,
            )
        body_out = {"accepted": len(messages), "rejected": rejected}
        return web.json_response(
            body_out, status=207 if rejected else 202, dumps=lambda o: orjson.dumps(o).decode()
        )

    def judge(item: _Item, now_ms: int) -> OutgoingMessage | _Refusal:
        """The message to send for a valid event, else why it is refused."""
        if item.error:
            return _Refusal("", RejectReason.BAD_JSON.value, item.error)
        if not isinstance(item.value, dict):
            return _Refusal("", RejectReason.NOT_AN_OBJECT.value, type(item.value).__name__)
        etype = item.value.get("event_type")
        kind = kinds.get(etype) if isinstance(etype, str) else None
        if kind is None:
            return _Refusal("", RejectReason.UNKNOWN_EVENT_TYPE.value, f"{str(etype)[:64]!r}")
        topic = topics[kind]
        if len(item.raw) > settings.limits.max_message_bytes:
            detail = f"{len(item.raw)} bytes, over {settings.limits.max_message_bytes}"
            if len(item.raw) > INGEST_MAX_MESSAGE_BYTES:
                detail += f"; over {INGEST_MAX_MESSAGE_BYTES}, so not kept as a dead letter"
            return _Refusal(topic, RejectReason.OVERSIZE.value, detail)
        checked = contract.check(kind, item.value, now_ms)
        if isinstance(checked, Rejection):
            return _Refusal(topic, checked.reason.value, checked.detail)
        key = (checked.user_id or checked.campaign_id).encode() or None
        return OutgoingMessage(topic, key, orjson.dumps(dict(checked.data)))

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=limit)
    app.router.add_post("/v1/events", events)
    app.router.add_get("/healthz", healthz)
    return app
