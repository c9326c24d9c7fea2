"""The contract's fast path: decode and validate one message in a single C pass (msgspec).

The msgspec types are generated from the published JSON Schema of the topic when the
``Contract`` is built, so the schema files stay the one source of truth. Each event type
becomes a ``Struct`` tagged by ``event_type`` that forbids unknown fields; every keyword is
translated to a msgspec constraint with the meaning fastjsonschema gives it, and a keyword
the generator does not know raises ``ValueError`` instead of being ignored.

The guarantee is one-sided, on purpose: whatever this path accepts, the exact validator
(``pipeline.contract``) accepts too, and parses to an equal object. The converse does not
hold and does not need to: a message rejected here (malformed, invalid, or valid in a way
msgspec is stricter about, such as ``"count": 3.0`` or an integer too big for 64 bits) goes
to the exact validator, which gives the verdict and the reason text.
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Mapping
from types import GenericAlias
from typing import Annotated, Any, Final, Literal

import msgspec
from fastjsonschema.draft07 import CodeGeneratorDraft07

__all__ = ["FastDecoder", "event_structs"]

# The regex fastjsonschema checks ``format: date-time`` with (anchored at both ends), taken
# from it rather than copied so that the two paths cannot drift apart on an upgrade.
DATE_TIME_REGEX: Final[str] = CodeGeneratorDraft07.FORMAT_REGEXS["date-time"]
# fastjsonschema turns every unescaped ``$`` of a ``pattern`` into ``\Z`` ("e-1\n" does not
# match ``^...$``), but not those of ``patternProperties``; msgspec uses ``re.search`` as is.
_DOLLAR: Final = re.compile(r"(?<!\\)\$")

_INT64: Final = (-(2**63), 2**63 - 1)
_DOCS: Final = frozenset({"description", "title", "$comment"})
_STRING: Final = frozenset({"type", "minLength", "maxLength", "pattern", "format"}) | _DOCS
_NUMBER: Final = frozenset({"type", "minimum", "maximum"}) | _DOCS
_ARRAY: Final = frozenset({"type", "items", "minItems", "maxItems"}) | _DOCS
_MAP: Final = frozenset({"type", "additionalProperties", "patternProperties"}) | _DOCS
_STRUCT: Final = frozenset({"type", "additionalProperties", "required", "properties"}) | _DOCS


def _expect(node: Mapping[str, Any], allowed: frozenset[str]) -> None:
    extra = node.keys() - allowed
    if extra:
        raise ValueError(f"no msgspec translation for {sorted(extra)} in {dict(node)}")


def _resolve(node: Mapping[str, Any], definitions: Mapping[str, Any]) -> Mapping[str, Any]:
    # Draft 7 ignores the siblings of "$ref" (fastjsonschema too); only notes may be there.
    while "$ref" in node:
        _expect(node, _DOCS | {"$ref"})
        ref = node["$ref"]
        if not ref.startswith("#/definitions/"):
            raise ValueError(f"only local definitions can be referenced, got {ref!r}")
        node = definitions[ref.removeprefix("#/definitions/")]
    return node


def _string(node: Mapping[str, Any]) -> Any:
    _expect(node, _STRING)
    constraints: dict[str, Any] = {}
    if "minLength" in node:
        constraints["min_length"] = node["minLength"]
    if "maxLength" in node:
        constraints["max_length"] = node["maxLength"]
    if "pattern" in node and "format" in node:
        raise ValueError(f"a string with both a pattern and a format: {dict(node)}")
    if "pattern" in node:
        constraints["pattern"] = _DOLLAR.sub(r"\\Z", node["pattern"])
    if "format" in node:
        if node["format"] != "date-time":
            raise ValueError(f"no msgspec translation for format {node['format']!r}")
        constraints["pattern"] = DATE_TIME_REGEX
    return Annotated[str, msgspec.Meta(**constraints)] if constraints else str


def _number(node: Mapping[str, Any]) -> Any:
    """``integer``: an int (a float such as 3.0 is an integer to the schema, but rare
    enough to leave to the exact validator). ``number``: an int or a float, kept as JSON
    wrote it, never a bool."""
    _expect(node, _NUMBER)
    low, high = node.get("minimum"), node.get("maximum")
    # orjson reads an integer beyond 64 bits as a float, msgspec as an int: keep to 64 bits.
    whole = {
        "ge": _INT64[0] if low is None else max(_INT64[0], math.ceil(low)),
        "le": _INT64[1] if high is None else min(_INT64[1], math.floor(high)),
    }
    integer = Annotated[int, msgspec.Meta(**whole)]
    if node["type"] == "integer":
        return integer
    real: dict[str, Any] = {}
    if low is not None:
        real["ge"] = float(low)
    if high is not None:
        real["le"] = float(high)
    return integer | (Annotated[float, msgspec.Meta(**real)] if real else float)


def field_type(node: Mapping[str, Any], definitions: Mapping[str, Any]) -> Any:
    """The msgspec type of one property's schema ``node``. Raises ``ValueError`` for any
    keyword or shape it cannot translate exactly."""
    node = _resolve(node, definitions)
    if "enum" in node:
        _expect(node, _DOCS | {"enum"})
        values = node["enum"]
        if not values or not all(isinstance(v, str) for v in values):
            raise ValueError(f"only enums of strings are translated: {values}")
        return Literal[tuple(values)]
    kind = node.get("type")
    if kind == "string":
        return _string(node)
    if kind in ("integer", "number"):
        return _number(node)
    if kind == "boolean":
        _expect(node, _DOCS | {"type"})
        return bool
    if kind == "array":
        _expect(node, _ARRAY)
        sizes: dict[str, Any] = {}
        if "minItems" in node:
            sizes["min_length"] = node["minItems"]
        if "maxItems" in node:
            sizes["max_length"] = node["maxItems"]
        items = GenericAlias(list, (field_type(node.get("items", {}), definitions),))
        return Annotated[items, msgspec.Meta(**sizes)] if sizes else items
    if kind == "object":
        # A nested object is a map whose keys match one pattern, and nothing else.
        _expect(node, _MAP)
        patterns = node.get("patternProperties", {})
        if node.get("additionalProperties") is not False or len(patterns) != 1:
            raise ValueError(f"only closed objects with one patternProperties: {dict(node)}")
        ((pattern, values),) = patterns.items()
        # Here fastjsonschema searches with the pattern as written ("$" before a final "\n").
        key = Annotated[str, msgspec.Meta(pattern=pattern)]
        return GenericAlias(dict, (key, field_type(values, definitions)))
    raise ValueError(f"no msgspec translation for {dict(node)}")


def _struct(
    event_type: str, node: Mapping[str, Any], definitions: Mapping[str, Any]
) -> type[msgspec.Struct]:
    node = _resolve(node, definitions)
    _expect(node, _STRUCT)
    if node.get("type") != "object" or node.get("additionalProperties") is not False:
        raise ValueError(f"{event_type}: an event must be a closed object")
    properties: Mapping[str, Any] = node.get("properties", {})
    required = set(node.get("required", ()))
    if required - properties.keys():
        raise ValueError(
            f"{event_type}: required but not a property: {required - properties.keys()}"
        )
    if properties.get("event_type") != {"const": event_type} or "event_type" not in required:
        raise ValueError(f"{event_type}: event_type must be required and const {event_type!r}")
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name, prop in properties.items():
        if name == "event_type":
            continue  # the tag: msgspec checks it, and every repetition of it
        typ = field_type(prop, definitions)
        fields.append(
            (name, typ) if name in required else (name, typ | msgspec.UnsetType, msgspec.UNSET)
        )
    return msgspec.defstruct(
        event_type,
        fields,
        kw_only=True,
        tag_field="event_type",
        tag=event_type,
        forbid_unknown_fields=True,
    )


def event_structs(schema: Mapping[str, Any]) -> dict[str, type[msgspec.Struct]]:
    """A tagged ``Struct`` per event type of one topic's schema, from the ``then`` of its
    ``allOf`` ``if event_type`` rules (the shape ``schema_per_event_type`` relies on too)."""
    _expect(
        schema, _DOCS | {"$schema", "$id", "type", "required", "properties", "allOf", "definitions"}
    )
    definitions: Mapping[str, Any] = schema.get("definitions", {})
    structs: dict[str, type[msgspec.Struct]] = {}
    for entry in schema.get("allOf", ()):
        tested = entry.get("if", {}).get("properties", {})
        if entry.keys() != {"if", "then"} or tested.keys() != {"event_type"}:
            raise ValueError(f"allOf entry is not an 'if event_type' rule: {entry}")
        event_type = tested["event_type"]["const"]
        if event_type in structs:
            raise ValueError(f"two rules for event type {event_type!r}")
        structs[event_type] = _struct(event_type, entry["then"], definitions)
    if set(structs) != set(schema["properties"]["event_type"]["enum"]):
        raise ValueError("every listed event type needs exactly one rule")
    return structs


class _Unlisted(msgspec.Struct, tag_field="event_type", tag="\x00unlisted"):
    """Not an event type of any topic: only here to make every decoder's type a union."""


class FastDecoder:
    """Decodes and validates messages of one topic against its schema, in one C pass."""

    __slots__ = ("_decoder",)

    def __init__(self, schema: Mapping[str, Any]) -> None:
        """Raises ``ValueError`` when the schema uses a rule with no exact translation."""
        # A lone tagged Struct takes a message without a tag; a union of two needs one.
        union = functools.reduce(operator.or_, event_structs(schema).values(), _Unlisted)
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(union)

    def decode(self, raw: bytes) -> dict[str, Any] | None:
        """The message as ``orjson.loads`` parses it, when the schema accepts it.

        ``None`` when msgspec does not accept it; the caller must then ask the exact
        validator, since that can be a valid message msgspec is stricter about. The result's
        keys are in schema order (``event_type`` first), not the message's; nested maps keep
        the message's order. Never raises.
        """
        try:
            event = self._decoder.decode(raw)
        except msgspec.MsgspecError:
            return None
        if type(event) is _Unlisted:
            return None
        data: dict[str, Any] = msgspec.to_builtins(event)
        return data
