"""The one-pass msgspec path against the exact orjson + fastjsonschema path.

What must hold: ``Contract.decode`` gives the same verdict, reason and detail as the exact
path for every message, and takes the fast path for every valid one (bar the documented
cases msgspec is stricter about, such as ``"count": 3.0``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.contract import (
    TOPIC_KINDS,
    Contract,
    Event,
    Rejection,
    RejectReason,
    _fast_decoder,
    load_schema,
)
from pipeline.contract_fast import FastDecoder, event_structs
from pipeline.simulator import SimulationConfig, simulate

NOW = 1_789_984_800_000  # 2026-09-21T10:00:00Z
CONTRACT = Contract(max_message_bytes=65536, max_future_skew_ms=300_000)

# A valid value for every property of every schema (a new property must be added here).
VALUES: dict[str, Any] = {
    "event_id": "ev-1.a:b_c",
    "event_time": "2026-09-21T11:59:00.250+02:00",
    "campaign_id": "cmp-1",
    "channel": "FB",
    "post_id": "p-1",
    "user_id": "u-1",
    "count": 7,
    "sentiment": "neutral",
    "resolved": True,
    "handle_seconds": 30.5,
    "watch_seconds": 12.25,
    "completed": False,
    "session_id": "s-1",
    "url": "https://shop.example/?utm_campaign=cmp-1",
    "referrer": "",
    "utm_source": "ig",
    "utm_medium": "social",
    "utm_campaign": "CMP-1",
    "utm_content": "c",
    "utm_term": "t",
    "click_ids": {"gclid": "g-1", "FBCLID": "f-1"},
    "order_id": "o-1",
    "revenue": 10,
    "currency": "EUR",
    "margin": 0.35,
    "media_spend": 120.5,
    "staff_hours": 2,
    "staff_hourly_rate": 45.0,
    "tools_cost": 0,
    "name": "Winter sale",
    "channels": ["fb", "Instagram"],
    "budget": 1000000000,
    "starts_at": "2026-09-01T00:00:00Z",
    "ends_at": "2026-10-01T00:00:00Z",
}


def _event_schemas() -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(kind, event type, resolved event schema, definitions) of every event type."""
    found = []
    for kind in TOPIC_KINDS:
        schema = load_schema(kind)
        definitions = schema["definitions"]
        for entry in schema["allOf"]:
            event_type = entry["if"]["properties"]["event_type"]["const"]
            found.append((kind, event_type, _resolve(entry["then"], definitions), definitions))
    return found


def _resolve(node: Mapping[str, Any], definitions: Mapping[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = definitions[node["$ref"].split("/")[-1]]
    return dict(node)


EVENT_SCHEMAS = _event_schemas()


def _template(kind: str, event_type: str) -> dict[str, Any]:
    """A valid event of that type with every optional property present."""
    for k, t, schema, _ in EVENT_SCHEMAS:
        if (k, t) == (kind, event_type):
            body = {name: VALUES[name] for name in schema["properties"] if name != "event_type"}
            return {"event_type": event_type, **body}
    raise KeyError(event_type)


def _typed(value: object) -> str:
    """Tells 3 from 3.0 and -0.0 from 0.0; nested maps in their order, the top level sorted."""
    if isinstance(value, Mapping):
        return repr(sorted(value.items(), key=lambda item: str(item[0])))
    return repr(value)


def assert_same(fast: Event | Rejection, exact: Event | Rejection) -> None:
    assert type(fast) is type(exact), (fast, exact)
    if isinstance(fast, Rejection):
        assert fast == exact
        return
    assert isinstance(exact, Event)
    for name in ("kind", "event_type", "event_id", "ts_ms", "channel", "campaign_id", "user_id"):
        assert getattr(fast, name) == getattr(exact, name), name
    assert _typed(fast.count) == _typed(exact.count)
    assert _typed(fast.data) == _typed(exact.data)


def both(kind: str, raw: bytes) -> tuple[Event | Rejection, Event | Rejection, bool]:
    """(decode, the exact path, whether the fast path accepted the message)."""
    taken = _fast_decoder(kind).decode(raw) is not None
    return CONTRACT.decode(kind, raw, NOW), CONTRACT._decode_exact(kind, raw, NOW), taken


# -- the generated types follow the schemas ----------------------------------------------


def test_every_property_has_a_test_value() -> None:
    for kind, event_type, schema, _ in EVENT_SCHEMAS:
        assert set(schema["properties"]) - {"event_type"} <= VALUES.keys(), (kind, event_type)


@pytest.mark.parametrize(("kind", "event_type"), [(k, t) for k, t, _, _ in EVENT_SCHEMAS])
def test_each_struct_has_the_schemas_fields_and_required_set(kind: str, event_type: str) -> None:
    struct = event_structs(load_schema(kind))[event_type]
    schema = next(s for k, t, s, _ in EVENT_SCHEMAS if (k, t) == (kind, event_type))
    fields = {f.name: f for f in msgspec.structs.fields(struct)}
    assert fields.keys() == set(schema["properties"]) - {"event_type"}
    assert {n for n, f in fields.items() if f.required} == set(schema["required"]) - {"event_type"}
    assert struct.__struct_config__.tag == event_type
    assert struct.__struct_config__.tag_field == "event_type"
    assert struct.__struct_config__.forbid_unknown_fields


@pytest.mark.parametrize(("kind", "event_type"), [(k, t) for k, t, _, _ in EVENT_SCHEMAS])
def test_the_full_template_of_each_type_takes_the_fast_path(kind: str, event_type: str) -> None:
    fast, exact, taken = both(kind, json.dumps(_template(kind, event_type)).encode())
    assert isinstance(exact, Event), exact
    assert taken
    assert_same(fast, exact)


@pytest.mark.parametrize(
    "change",
    [
        {"multipleOf": 0.01},
        {"exclusiveMinimum": 0},
        {"format": "email"},
        {"type": "null"},
        {"$ref": "https://elsewhere.invalid/money.json"},
    ],
)
def test_a_rule_with_no_translation_is_refused_not_ignored(change: dict[str, Any]) -> None:
    schema = load_schema("campaign.costs")
    schema["definitions"]["money"] = {**schema["definitions"]["money"], **change}
    if "$ref" in change:
        schema["definitions"]["money"] = change
    with pytest.raises(ValueError):
        FastDecoder(schema)


def test_an_open_event_object_is_refused() -> None:
    schema = load_schema("campaign.costs")
    schema["definitions"]["cost"]["additionalProperties"] = True
    with pytest.raises(ValueError):
        FastDecoder(schema)


# -- every rule of every property: both paths reject, in C on the fast one ---------------


def _violations(name: str, node: Mapping[str, Any], definitions: Mapping[str, Any]) -> list[Any]:
    """Values the schema rule(s) of property ``name`` reject, one or more per keyword."""
    node = _resolve(node, definitions)
    valid = VALUES.get(name)
    bad: list[Any] = [None, [valid], {"v": valid}]
    kind = node.get("type")
    if "enum" in node:
        bad += ["x" + node["enum"][0], node["enum"][0].upper(), 1, True]
    if kind == "string":
        bad += [1, 1.5, True]
        if node.get("minLength", 0) > 0:
            bad.append("")
        if "maxLength" in node:
            bad += ["a" * (node["maxLength"] + 1), "😀" * (node["maxLength"] + 1)]
        if "pattern" in node:
            bad += [f"{valid}\n", f"{valid} x", f"{valid}é"]
        if node.get("format") == "date-time":
            bad += [
                "2026-09-21 10:00:00Z",
                "2026-09-21T10:00:00",
                "2026-02-29T10:00:00Z",
                "2026-09-21T10:00:00Z\n",
                "2026-09-21T24:00:00Z",
            ]
    if kind in ("integer", "number"):
        bad += [str(valid), True, False]
        if "minimum" in node:
            bad += [node["minimum"] - 1, node["minimum"] - 0.5, -1e300]
        if "maximum" in node:
            bad += [node["maximum"] + 1, node["maximum"] + 0.5, 10**30, 1e300]
        if kind == "integer":
            bad.append(1.5)
    if kind == "boolean":
        bad += [0, 1, "true"]
    if kind == "array":
        bad += ["fb", [1], [""]]
        if "maxItems" in node:
            bad.append(["fb"] * (node["maxItems"] + 1))
    if kind == "object":
        bad += [["gclid"], {"g": "x"}, {"gclid": ""}, {"gclid": 1}, {"a" * 17: "x"}]
    return bad


def _rule_cases() -> list[tuple[str, str, str, Any]]:
    cases = []
    for kind, event_type, schema, definitions in EVENT_SCHEMAS:
        for name, node in schema["properties"].items():
            if name == "event_type":
                continue
            for value in _violations(name, node, definitions):
                cases.append((kind, event_type, name, value))
    return cases


RULE_CASES = _rule_cases()


def test_every_property_has_violations_for_each_of_its_rules() -> None:
    assert len(RULE_CASES) > 400


def test_every_rule_of_every_property_is_enforced_by_both_paths() -> None:
    for kind, event_type, name, value in RULE_CASES:
        body = {**_template(kind, event_type), name: value}
        fast, exact, taken = both(kind, json.dumps(body).encode())
        assert isinstance(exact, Rejection), (kind, event_type, name, value)
        assert exact.reason is RejectReason.SCHEMA_VIOLATION, (name, value, exact)
        assert not taken, (kind, event_type, name, value)
        assert_same(fast, exact)


def test_required_and_unknown_fields_are_enforced_by_both_paths() -> None:
    for kind, event_type, schema, _ in EVENT_SCHEMAS:
        template = _template(kind, event_type)
        changed = [{"zzz": 1}, {"Event_id": "e"}, {"data": {}}]
        dropped = [{k: v for k, v in template.items() if k != name} for name in schema["required"]]
        for body in [*({**template, **c} for c in changed), *dropped]:
            fast, exact, taken = both(kind, json.dumps(body).encode())
            assert isinstance(exact, Rejection), body
            assert not taken
            assert_same(fast, exact)


# -- edge cases of JSON itself -----------------------------------------------------------

_LIKE = json.dumps(_template("social.interactions", "like"))[:-1]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (_LIKE + ', "count": NaN}', RejectReason.BAD_JSON),
        (_LIKE + ', "count": Infinity}', RejectReason.BAD_JSON),
        (_LIKE + ', "count": 1e400}', RejectReason.BAD_JSON),
        (_LIKE + ', "count": 12345678901234567890123}', RejectReason.SCHEMA_VIOLATION),
        (_LIKE + ', "count": 18446744073709551616}', RejectReason.SCHEMA_VIOLATION),
        (_LIKE + ', "count": 3.0}', None),  # an integer to the schema: exact path, accepted
        (_LIKE + ', "count": 1E2}', None),
        (_LIKE + ', "count": -0}', RejectReason.SCHEMA_VIOLATION),
        (_LIKE + ', "count": 01}', RejectReason.BAD_JSON),
        (_LIKE + ', "user_id": "\\ud800"}', RejectReason.BAD_JSON),
        (_LIKE + ', "user_id": "\\ud83d\\ude00"}', None),
        (_LIKE + ', "user_id": "a\\u0000b"}', None),
        (_LIKE + ', "event_type": "comment"}', None),  # the last repetition wins in both
        (_LIKE + ', "event_type": "poke"}', RejectReason.UNKNOWN_EVENT_TYPE),
        (_LIKE + ', "event_id": "e\\n"}', RejectReason.SCHEMA_VIOLATION),
        (_LIKE + ', "event_id": "e-2"}', None),
        (_LIKE + ', "\\u0065vent_id": "e-3"}', None),
        (_LIKE + "}  \n", None),
        (_LIKE + "} x", RejectReason.BAD_JSON),
        (_LIKE + ",}", RejectReason.BAD_JSON),
        ("\ufeff" + _LIKE + "}", RejectReason.BAD_JSON),
        ('{"event_type": "impression"}', RejectReason.SCHEMA_VIOLATION),
        ('{"event_type": 1}', RejectReason.UNKNOWN_EVENT_TYPE),
        ('{"event_type": "\\u0000unlisted"}', RejectReason.UNKNOWN_EVENT_TYPE),
        ("[]", RejectReason.NOT_AN_OBJECT),
        ('"like"', RejectReason.NOT_AN_OBJECT),
        ("", RejectReason.BAD_JSON),
    ],
)
def test_json_edge_cases_agree(raw: str, reason: RejectReason | None) -> None:
    fast, exact, _ = both("social.interactions", raw.encode())
    assert_same(fast, exact)
    assert (exact.reason if isinstance(exact, Rejection) else None) is reason, exact


def test_a_time_the_format_lets_through_is_rejected_on_parsing_by_both_paths() -> None:
    # "\d" of the format's regex matches any Unicode digit; datetime.fromisoformat does not.
    body = {**_template("social.interactions", "like"), "event_time": "\u0662026-09-21T10:00:00Z"}
    fast, exact, taken = both("social.interactions", json.dumps(body).encode())
    assert taken and isinstance(exact, Rejection)
    assert exact.detail.startswith("event_time: ")
    assert_same(fast, exact)


def test_a_float_count_is_valid_but_left_to_the_exact_path() -> None:
    fast, _, taken = both("social.interactions", (_LIKE + ', "count": 3.0}').encode())
    assert isinstance(fast, Event) and not taken
    assert fast.count == 3.0 and isinstance(fast.count, float)  # as before msgspec


def test_click_ids_keep_the_messages_order() -> None:
    body = {**_template("web.events", "page_view"), "click_ids": {"twclid": "t", "fbclid": "f"}}
    fast, _, taken = both("web.events", json.dumps(body).encode())
    assert taken and isinstance(fast, Event)
    assert list(fast.data["click_ids"]) == ["twclid", "fbclid"]  # the first one names the channel


# -- the simulator's traffic --------------------------------------------------------------


@pytest.mark.parametrize("seed", [11, 12])
def test_simulated_messages_agree_and_every_valid_one_is_fast(seed: int) -> None:
    messages, _ = simulate(
        SimulationConfig(events=3_000, seed=seed, campaigns=4, invalid_share=0.2)
    )
    now = NOW + 30 * 86_400_000  # after the simulated days, so only the bad times are skewed
    reasons: dict[str, int] = {}
    for message in messages:
        raw = message.value
        fast = CONTRACT.decode(message.kind, raw, now)
        if len(raw) > 65536:
            assert isinstance(fast, Rejection) and fast.reason is RejectReason.OVERSIZE
            continue
        exact = CONTRACT._decode_exact(message.kind, raw, now)
        assert_same(fast, exact)
        if isinstance(exact, Event):
            assert _fast_decoder(message.kind).decode(raw) is not None, raw
        key = exact.reason.value if isinstance(exact, Rejection) else "event"
        reasons[key] = reasons.get(key, 0) + 1
    assert reasons["event"] > 2_000
    assert {"bad_json", "schema_violation", "unknown_event_type", "clock_skew"} <= reasons.keys()


# -- anything nearby: mutated valid events ------------------------------------------------

_JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, 1, -1, 30, 86_400, 86_401, 10**9, 10**9 + 1, 2**63, 2**64, 10**30]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 0.5, 1.0, 3.0, 1.5, 1e9, 1e9 + 0.5, 86_400.0, 1e300, 5e-324]),
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            "e-1\n",
            "EUR",
            "eur",
            "EURO",
            "EUR\n",
            "positive",
            "Positive",
            "2026-09-21T09:58:00Z",
            "2026-09-21T10:10:00Z",
            "2026-09-21t09:58:00.5z",
            "2026-09-21T09:58:60Z",
            "2024-02-29T09:58:00+0200",
            "2026-09-21T09:58:00.\u0661Z",  # an Arabic-Indic digit: \d matches it
            "x" * 129,
            "😀" * 64,
            "😀" * 65,
        ]
    ),
    st.lists(st.text(max_size=6) | st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=17), st.text(max_size=4) | st.integers(), max_size=3),
)
_NAMES = sorted({*VALUES, "event_type", "zzz", "Count", ""})
_RAW = [b"NaN", b"-Infinity", b"1e400", b"-0", b"3.0", b"1E1", b"99999999999999999999999"]
_RAW += [b'"\\ud800"', b'"e\\u0000"', b'"\\u0065v-9"', b'"like"', b'"2026-09-21T09:00:00Z"']


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([(k, t) for k, t, _, _ in EVENT_SCHEMAS]),
    st.lists(st.tuples(st.sampled_from(_NAMES), _JUNK | st.just(...)), max_size=3),
    st.lists(st.tuples(st.sampled_from(_NAMES), st.sampled_from(_RAW)), max_size=2),
    st.booleans(),
)
def test_mutated_events_agree(
    kind_type: tuple[str, str],
    changes: list[tuple[str, Any]],
    raw_tail: list[tuple[str, bytes]],
    ascii_only: bool,
) -> None:
    kind, event_type = kind_type
    body = _template(kind, event_type)
    for name, value in changes:
        if value is ...:
            body.pop(name, None)
        else:
            body[name] = value
    raw = json.dumps(body, ensure_ascii=ascii_only).encode()
    for name, token in raw_tail:  # repeated keys and tokens json.dumps would not write
        raw = raw[:-1] + (b", " if len(raw) > 2 else b"") + json.dumps(name).encode()
        raw += b": " + token + b"}"
    fast, exact, taken = both(kind, raw)
    assert_same(fast, exact)
    if isinstance(exact, Event) and not raw_tail:
        integral_float = any(
            isinstance(exact.data.get(n), float) for n in ("count",)
        )  # an integer to the schema; msgspec wants an int
        assert taken or integral_float, raw


@given(st.binary(max_size=200))
def test_arbitrary_bytes_agree(raw: bytes) -> None:
    for kind in TOPIC_KINDS:
        fast, exact, _ = both(kind, raw)
        assert_same(fast, exact)
