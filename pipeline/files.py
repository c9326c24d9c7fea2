"""Reading events from JSONL and CSV files for replay, with line-numbered errors.

CSV cells are strings; each is converted to the type the contract gives its column
(integer, number, boolean, or JSON for objects such as ``click_ids``). Empty cells are
treated as absent.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.contract import TOPIC_KINDS, Contract, Event, Rejection, load_schema

__all__ = ["BadLine", "FileEvent", "kind_of_event_type", "read_events"]


@dataclass(frozen=True, slots=True)
class BadLine:
    path: str
    line: int
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}: {self.detail}"


@dataclass(frozen=True, slots=True)
class FileEvent:
    kind: str
    event: Event
    raw: bytes


def kind_of_event_type() -> dict[str, str]:
    """Event types are unique across topics; this maps each to its topic's contract name."""
    mapping: dict[str, str] = {}
    for kind in TOPIC_KINDS:
        for etype in load_schema(kind)["properties"]["event_type"]["enum"]:
            mapping[etype] = kind
    return mapping


def _column_types() -> dict[str, set[str]]:
    types: dict[str, set[str]] = {}
    for kind in TOPIC_KINDS:
        schema = load_schema(kind)
        defs = schema["definitions"]
        for definition in defs.values():
            for name, prop in definition.get("properties", {}).items():
                if "$ref" in prop:
                    prop = {**defs[prop["$ref"].rsplit("/", 1)[1]], **prop}
                kind_name = prop.get("type")
                if isinstance(kind_name, str):
                    types.setdefault(name, set()).add(kind_name)
    return types


def _convert(value: str, types: set[str]) -> Any:
    if "integer" in types:
        return int(value)
    if "number" in types:
        number = float(value)
        return int(number) if number.is_integer() and "." not in value else number
    if "boolean" in types:
        lowered = value.strip().lower()
        if lowered not in {"true", "false", "1", "0", "yes", "no"}:
            raise ValueError(f"not a boolean: {value!r}")
        return lowered in {"true", "1", "yes"}
    if types & {"object", "array"}:
        return orjson.loads(value)
    return value


def _objects(path: str, text: str) -> Iterator[tuple[int, Any | BadLine]]:
    if path.lower().endswith(".csv"):
        types = _column_types()
        reader = csv.DictReader(io.StringIO(text))
        header = reader.fieldnames or []
        if "event_type" not in header:
            # Without it no line can be read: one message, not one per line.
            first = ",".join(header)[:120]
            yield (
                1,
                BadLine(
                    path,
                    1,
                    "missing_header",
                    "the first line must be a header naming the columns, with event_type "
                    f"among them; it is: {first!r}",
                ),
            )
            return
        for row in reader:
            line = reader.line_num
            try:
                yield (
                    line,
                    {
                        k: _convert(v, types.get(k, {"string"}))
                        for k, v in row.items()
                        if k is not None and v not in (None, "")
                    },
                )
            except (ValueError, orjson.JSONDecodeError) as exc:
                yield line, BadLine(path, line, "schema_violation", str(exc)[:200])
        return
    for line, content in enumerate(text.splitlines(), start=1):
        if not content.strip():
            continue
        try:
            yield line, orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            yield line, BadLine(path, line, "bad_json", str(exc)[:200])


def read_events(
    path: str, text: str, contract: Contract, now_ms: int
) -> Iterator[FileEvent | BadLine]:
    """Every line of a JSONL or CSV file as a valid event or a numbered bad line."""
    kinds = kind_of_event_type()
    for line, obj in _objects(path, text):
        if isinstance(obj, BadLine):
            yield obj
            continue
        etype = obj.get("event_type") if isinstance(obj, dict) else None
        kind = kinds.get(etype) if isinstance(etype, str) else None
        if kind is None:
            yield BadLine(path, line, "unknown_event_type", f"{str(etype)[:64]!r}")
            continue
        checked = contract.check(kind, obj, now_ms)
        if isinstance(checked, Rejection):
            yield BadLine(path, line, checked.reason.value, checked.detail)
            continue
        yield FileEvent(kind, checked, orjson.dumps(obj))
