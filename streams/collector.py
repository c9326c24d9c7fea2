"""HTTP collector: a site's tag and webhooks post events; valid ones go to Kafka.

``POST /v1/events`` takes one JSON object, a JSON array of objects, or NDJSON, with
``Authorization: Bearer <token>``. A batch is all or nothing: if any event is invalid the
answer is 400 with each bad event's index, reason and detail, and nothing is produced; a
202 means every event is acknowledged by Kafka (``acks=all``). Errors: 401 no token, 403
wrong token, 413 body over the limit, 415 not JSON, 503 Kafka unavailable.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Any

import orjson
from aiohttp import web
from kafka.errors import KafkaError

from pipeline.contract import Contract, Event, Rejection
from pipeline.files import kind_of_event_type
from pipeline.settings import Settings
from streams.health import ProduceReadiness
from streams.metrics import CollectorMetrics
from streams.producer import EventProducer, OutgoingMessage, topic_for_kind

__all__ = ["build_collector"]

log = logging.getLogger(__name__)
_MAX_EVENTS = 10_000


def _error(status: int, reason: str, detail: str, **extra: Any) -> web.Response:
    body = {"error": reason, "detail": detail, **extra}
    return web.json_response(body, status=status, dumps=lambda o: orjson.dumps(o).decode())


def _parse(body: bytes) -> list[Any]:
    body = body.strip()
    if body.startswith(b"[") or body.startswith(b"{"):
        try:
            parsed = orjson.loads(body)
            return parsed if isinstance(parsed, list) else [parsed]
        except orjson.JSONDecodeError:
            if not body.startswith(b"{"):
                raise
    return [orjson.loads(line) for line in body.splitlines() if line.strip()]


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
            return _error(415, "unsupported_media_type", "send application/json or NDJSON")
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
        accepted: list[tuple[str, Event]] = []
        rejected = []
        for index, item in enumerate(items):
            etype = item.get("event_type") if isinstance(item, dict) else None
            kind = kinds.get(etype) if isinstance(etype, str) else None
            if kind is None:
                rejected.append(
                    {
                        "index": index,
                        "reason": "unknown_event_type",
                        "detail": f"{str(etype)[:64]!r}",
                    }
                )
                continue
            if len(orjson.dumps(item)) > settings.limits.max_message_bytes:
                rejected.append(
                    {
                        "index": index,
                        "reason": "oversize",
                        "detail": f"over {settings.limits.max_message_bytes} bytes",
                    }
                )
                continue
            checked = contract.check(kind, item, now_ms)
            if isinstance(checked, Rejection):
                rejected.append(
                    {"index": index, "reason": checked.reason.value, "detail": checked.detail}
                )
            else:
                accepted.append((kind, checked))
        for bad in rejected:
            metrics.dead_letters.labels(bad["reason"]).inc()
        if rejected:
            return _error(
                400,
                "invalid_events",
                f"{len(rejected)} invalid; nothing accepted",
                rejected=rejected,
            )
        messages = [
            OutgoingMessage(
                topics[kind],
                (event.user_id or event.campaign_id).encode() or None,
                orjson.dumps(dict(event.data)),
            )
            for kind, event in accepted
        ]
        try:
            await asyncio.to_thread(producer.send_confirmed, messages)
        except KafkaError as exc:
            log.warning("collector could not produce: %s", type(exc).__name__)
            readiness.refused(type(exc).__name__)
            return _error(503, "kafka_unavailable", "try again later")
        readiness.acknowledged()
        for message in messages:
            metrics.produced.labels(message.topic).inc()
        return web.json_response({"accepted": len(messages)}, status=202)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=limit)
    app.router.add_post("/v1/events", events)
    app.router.add_get("/healthz", healthz)
    return app
