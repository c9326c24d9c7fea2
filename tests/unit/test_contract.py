from __future__ import annotations

import fastjsonschema
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.contract import (
    TOPIC_KINDS,
    Contract,
    Event,
    Rejection,
    RejectReason,
    _validators,
    load_schema,
    schema_per_event_type,
)
from pipeline.simulator import SimulationConfig, simulate

NOW = 1_789_984_800_000  # 2026-09-21T10:00:00Z


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract(max_message_bytes=65536, max_future_skew_ms=300_000)


def like(**changes: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event_id": "e-1",
        "event_type": "like",
        "event_time": "2026-09-21T10:00:00Z",
        "campaign_id": "cmp-1",
        "channel": "FB",
        "user_id": "u-1",
    }
    event.update(changes)
    return {k: v for k, v in event.items() if v is not None}


def test_valid_event_is_normalised(contract: Contract) -> None:
    decoded = contract.decode("social.interactions", orjson.dumps(like(count=3)), NOW)
    assert isinstance(decoded, Event)
    assert decoded.channel == "facebook"
    assert decoded.count == 3
    assert decoded.ts_ms == int(
        __import__("datetime").datetime.fromisoformat("2026-09-21T10:00:00+00:00").timestamp()
        * 1000
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"event_id": "e"', RejectReason.BAD_JSON),
        (b"[1, 2]", RejectReason.NOT_AN_OBJECT),
        (b"null", RejectReason.NOT_AN_OBJECT),
        (orjson.dumps(like(event_type="poke")), RejectReason.UNKNOWN_EVENT_TYPE),
        (orjson.dumps(like(user_id=None)), RejectReason.SCHEMA_VIOLATION),
        (orjson.dumps(like(count="3")), RejectReason.SCHEMA_VIOLATION),
        (orjson.dumps(like(count=0)), RejectReason.SCHEMA_VIOLATION),
        (orjson.dumps(like(unknown_field=1)), RejectReason.SCHEMA_VIOLATION),
        (orjson.dumps(like(event_time="2026-09-21 10:00")), RejectReason.SCHEMA_VIOLATION),
        (orjson.dumps(like(event_time="2026-09-21T10:00:00")), RejectReason.SCHEMA_VIOLATION),
        (orjson.dumps(like(event_time="2026-09-21T11:00:00Z")), RejectReason.CLOCK_SKEW),
        (orjson.dumps(like(padding="x" * 70_000)), RejectReason.OVERSIZE),
        (b'{"event_type": "conversion", "revenue": NaN}', RejectReason.BAD_JSON),
        (None, RejectReason.BAD_JSON),
    ],
)
def test_bad_messages_are_typed_rejections(
    contract: Contract, raw: bytes | None, reason: RejectReason
) -> None:
    decoded = contract.decode("social.interactions", raw, NOW)
    assert isinstance(decoded, Rejection)
    assert decoded.reason is reason
    assert decoded.detail


def test_future_within_skew_is_accepted(contract: Contract) -> None:
    raw = orjson.dumps(like(event_time="2026-09-21T10:04:00Z"))
    assert isinstance(contract.decode("social.interactions", raw, NOW), Event)


def test_conversion_requires_currency_and_finite_revenue(contract: Contract) -> None:
    conversion = {
        "event_id": "c1",
        "event_type": "conversion",
        "user_id": "u",
        "event_time": "2026-09-21T09:00:00+02:00",
        "order_id": "o1",
        "revenue": 10.5,
    }
    missing = contract.check("web.events", conversion, NOW)
    assert isinstance(missing, Rejection)
    assert missing.reason is RejectReason.SCHEMA_VIOLATION
    ok = contract.check("web.events", {**conversion, "currency": "USD"}, NOW)
    assert isinstance(ok, Event)
    negative = contract.check("web.events", {**conversion, "currency": "USD", "revenue": -1}, NOW)
    assert isinstance(negative, Rejection)


def test_every_topic_schema_is_closed_and_lists_its_types() -> None:
    for kind in TOPIC_KINDS:
        schema = load_schema(kind)
        assert schema["title"] == kind
        for name, definition in schema["definitions"].items():
            if definition.get("type") == "object" and "required" in definition:
                assert definition["additionalProperties"] is False, (kind, name)
                assert {"event_id", "event_type", "event_time"} <= set(definition["required"])


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    contract = Contract(max_message_bytes=256, max_future_skew_ms=0)
    for kind in TOPIC_KINDS:
        assert isinstance(contract.decode(kind, raw, NOW), Event | Rejection)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    )
)
def test_arbitrary_json_never_raises(value: object) -> None:
    contract = Contract(max_message_bytes=65536, max_future_skew_ms=0)
    for kind in TOPIC_KINDS:
        assert isinstance(contract.check(kind, value, NOW), Event | Rejection)


def _verdict(validator: object, obj: dict[str, object]) -> str | None:
    try:
        validator(obj)  # type: ignore[operator]
    except fastjsonschema.JsonSchemaValueException as exc:
        return exc.message
    return None


_WHOLE = {kind: fastjsonschema.compile(load_schema(kind)) for kind in TOPIC_KINDS}


def _simulated() -> list[tuple[str, dict[str, object]]]:
    messages, _ = simulate(SimulationConfig(events=3_000, seed=11, campaigns=4, invalid_share=0.2))
    found = []
    for message in messages:
        try:
            obj = orjson.loads(message.value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("event_type"), str):
            found.append((message.kind, obj))
    return found


def test_per_event_type_validators_agree_with_the_whole_schema_on_simulated_messages() -> None:
    checked = rejected = 0
    for kind, obj in _simulated():
        schema = load_schema(kind)
        if obj["event_type"] not in schema["properties"]["event_type"]["enum"]:
            continue
        split = fastjsonschema.compile(schema_per_event_type(schema, str(obj["event_type"])))
        whole = _verdict(_WHOLE[kind], obj)
        assert (whole is None) == (_verdict(split, obj) is None), (kind, obj, whole)
        checked += 1
        rejected += whole is not None
    assert checked > 2_000 and rejected > 10  # both verdicts were compared


@given(
    st.sampled_from(
        [(k, t) for k in TOPIC_KINDS for t in load_schema(k)["properties"]["event_type"]["enum"]]
    ),
    st.dictionaries(
        st.sampled_from(
            [
                "event_id",
                "event_time",
                "campaign_id",
                "channel",
                "user_id",
                "count",
                "sentiment",
                "revenue",
                "currency",
                "amount",
                "url",
                "order_id",
            ]
        ),
        st.none() | st.booleans() | st.integers() | st.text(max_size=30),
        max_size=8,
    ),
)
def test_per_event_type_validators_agree_with_the_whole_schema_on_any_fields(
    kind_type: tuple[str, str], fields: dict[str, object]
) -> None:
    kind, event_type = kind_type
    obj = {**fields, "event_type": event_type}
    split = _validators(kind)[event_type]
    assert (_verdict(_WHOLE[kind], obj) is None) == (_verdict(split, obj) is None)
