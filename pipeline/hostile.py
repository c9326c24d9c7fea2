"""The simulator's hostile messages: one of each kind of bad input the worker must turn
into a typed dead letter (bad JSON, a schema violation, an unknown event type, a clock far
ahead, an unknown currency, an oversize message), with the reason it must give."""

from __future__ import annotations

import random

import orjson

__all__ = ["invalid_message"]


def invalid_message(
    rng: random.Random, event_id: str, event_time: str, campaign_id: str
) -> tuple[str, bytes, str]:
    """A hostile message: (topic kind, raw bytes, the reason the pipeline must give), one
    of eight cases drawn with ``rng``; the valid parts carry ``event_id``, ``event_time``
    and ``campaign_id``."""
    good = {
        "event_id": event_id,
        "event_type": "like",
        "event_time": event_time,
        "campaign_id": campaign_id,
        "channel": "facebook",
        "user_id": "u-bad",
    }
    case = rng.randrange(8)
    if case == 0:
        return "social.interactions", b'{"event_id": "x", "event_type": "like",', "bad_json"
    if case == 1:
        return "social.interactions", orjson.dumps({**good, "count": "ten"}), "schema_violation"
    if case == 2:
        del good["user_id"]
        return "social.interactions", orjson.dumps(good), "schema_violation"
    if case == 3:
        return (
            "social.interactions",
            orjson.dumps({**good, "event_type": "poke"}),
            "unknown_event_type",
        )
    if case == 4:
        raw = (
            orjson.dumps({**good, "event_type": "conversion", "order_id": "o", "currency": "EUR"})[
                :-1
            ]
            + b', "revenue": NaN}'
        )
        return "web.events", raw, "bad_json"
    if case == 5:
        return (
            "social.interactions",
            orjson.dumps({**good, "event_time": "2999-01-01T00:00:00Z"}),
            "clock_skew",
        )
    if case == 6:
        return (
            "web.events",
            orjson.dumps(
                {
                    **good,
                    "event_type": "conversion",
                    "order_id": "o",
                    "revenue": 10,
                    "currency": "XXX",
                    "campaign_id": None,
                    "channel": None,
                }
            ).replace(b',"campaign_id":null,"channel":null', b""),
            "unknown_currency",
        )
    return "social.interactions", orjson.dumps({**good, "padding": "x" * 70_000}), "oversize"
