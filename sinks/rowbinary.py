"""ClickHouse's RowBinary format, for the embedded engine.

chDB exchanges data with Python as bytes in a ClickHouse format. RowBinary is exact (a String
holds any bytes, integers keep all 64 bits) and cheap to produce, so the chDB backend inserts
with ``FORMAT RowBinary`` and reads with ``RowBinaryWithNamesAndTypes``. Only the types this
project uses are supported: (U)Int8-64, Float32/64, Bool, String, FixedString, Date,
DateTime[('tz')], DateTime64, Nullable(T), LowCardinality(T) and Array(T); any other type is a
:class:`QueryError` naming it, so a new column type fails loudly instead of corrupting rows.

Values written: ``str`` (UTF-8) or ``bytes`` for strings; ``int`` for integers; ``bool`` for
Bool/UInt8; for DateTime an ``int`` of epoch seconds or a timezone-aware ``datetime``
(a naive one is refused: its instant is ambiguous). Values read: ``int``, ``float``, ``bool``,
``str`` (``bytes`` when not valid UTF-8, as clickhouse-driver does), ``date``, and
timezone-aware UTC ``datetime`` for DateTime, whatever the column's display time zone.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sinks.errors import QueryError

__all__ = ["decode_with_names_and_types", "encode_rows"]

_FIXED: dict[str, str] = {
    "UInt8": "B",
    "UInt16": "H",
    "UInt32": "I",
    "UInt64": "Q",
    "Int8": "b",
    "Int16": "h",
    "Int32": "i",
    "Int64": "q",
    "Float32": "f",
    "Float64": "d",
    "Bool": "?",
}
_EPOCH_DATE = date(1970, 1, 1)

Encoder = Callable[[Any, bytearray], None]
Decoder = Callable[[memoryview, int], tuple[Any, int]]


def _unwrap(type_name: str, wrapper: str) -> str | None:
    prefix = wrapper + "("
    if type_name.startswith(prefix) and type_name.endswith(")"):
        return type_name[len(prefix) : -1]
    return None


def _base(type_name: str) -> str:
    inner = _unwrap(type_name, "LowCardinality")
    return inner if inner is not None else type_name


def _is_datetime(type_name: str) -> bool:
    return type_name == "DateTime" or type_name.startswith("DateTime(")


def _epoch_seconds(value: Any) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise QueryError("naive datetime given for a DateTime column; pass an aware one")
        return int(value.timestamp())
    raise QueryError(f"DateTime value must be int epoch seconds or datetime, not {value!r}")


def _write_varint(number: int, out: bytearray) -> None:
    while True:
        low = number & 0x7F
        number >>= 7
        if number:
            out.append(low | 0x80)
        else:
            out.append(low)
            return


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    shift = 0
    result = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _string_encoder(value: Any, out: bytearray) -> None:
    raw = value.encode() if isinstance(value, str) else bytes(value)
    _write_varint(len(raw), out)
    out += raw


def _encoder(type_name: str) -> Encoder:
    type_name = _base(type_name)
    inner = _unwrap(type_name, "Nullable")
    if inner is not None:
        inner_encoder = _encoder(inner)

        def nullable(value: Any, out: bytearray) -> None:
            if value is None:
                out.append(1)
            else:
                out.append(0)
                inner_encoder(value, out)

        return nullable
    inner = _unwrap(type_name, "Array")
    if inner is not None:
        item_encoder = _encoder(inner)

        def array(value: Any, out: bytearray) -> None:
            _write_varint(len(value), out)
            for item in value:
                item_encoder(item, out)

        return array
    if type_name == "String":
        return _string_encoder
    if _is_datetime(type_name):
        pack_u32 = struct.Struct("<I").pack
        return lambda value, out: out.extend(pack_u32(_epoch_seconds(value)))
    if type_name == "Date":
        pack_u16 = struct.Struct("<H").pack
        return lambda value, out: out.extend(pack_u16((value - _EPOCH_DATE).days))
    code = _FIXED.get(type_name)
    if code is None:
        raise QueryError(f"cannot write column type {type_name} to chDB (not supported here)")
    pack = struct.Struct("<" + code).pack
    return lambda value, out: out.extend(pack(value))


def _fixed_code(type_name: str) -> str | None:
    type_name = _base(type_name)
    if _is_datetime(type_name):
        return "I"
    return _FIXED.get(type_name)


def _row_encoder(types: Sequence[str]) -> Callable[[Sequence[Any], bytearray], None]:
    """One function per row layout: runs of fixed-width columns are packed by one Struct."""
    steps: list[Callable[[Sequence[Any], bytearray], None]] = []
    index = 0
    while index < len(types):
        start = index
        codes = ""
        while index < len(types) and (code := _fixed_code(types[index])) is not None:
            codes += code
            index += 1
        if codes:
            steps.append(_fixed_run(types[start:index], start, index, struct.Struct("<" + codes)))
            continue
        steps.append(_single(_encoder(types[index]), index))
        index += 1

    def encode_row(row: Sequence[Any], out: bytearray) -> None:
        for step in steps:
            step(row, out)

    return encode_row


def _single(encoder: Encoder, index: int) -> Callable[[Sequence[Any], bytearray], None]:
    return lambda row, out: encoder(row[index], out)


def _fixed_run(
    types: Sequence[str], start: int, end: int, packer: struct.Struct
) -> Callable[[Sequence[Any], bytearray], None]:
    datetime_at = [i for i, name in enumerate(types) if _is_datetime(_base(name))]

    def run(row: Sequence[Any], out: bytearray) -> None:
        values = row[start:end]
        try:
            out += packer.pack(*values)
        except struct.error:
            # Usually a datetime object in a DateTime column: convert, then pack once more.
            converted = list(values)
            for i in datetime_at:
                converted[i] = _epoch_seconds(converted[i])
            try:
                out += packer.pack(*converted)
            except struct.error as exc:
                raise QueryError(f"value does not fit its column type: {exc}") from exc

    return run


def encode_rows(types: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    """``rows`` as RowBinary for columns of ``types`` (in the same order as each row)."""
    encode_row = _row_encoder(types)
    width = len(types)
    out = bytearray()
    for row in rows:
        if len(row) != width:
            raise QueryError(f"row has {len(row)} values for {width} columns")
        encode_row(row, out)
    return bytes(out)


def _decoder(type_name: str) -> Decoder:
    type_name = _base(type_name)
    inner = _unwrap(type_name, "Nullable")
    if inner is not None:
        if inner == "Nothing":
            return lambda buf, pos: (None, pos + 1)
        inner_decoder = _decoder(inner)

        def nullable(buf: memoryview, pos: int) -> tuple[Any, int]:
            if buf[pos]:
                return None, pos + 1
            return inner_decoder(buf, pos + 1)

        return nullable
    inner = _unwrap(type_name, "Array")
    if inner is not None:
        item_decoder = _decoder(inner)

        def array(buf: memoryview, pos: int) -> tuple[Any, int]:
            count, pos = _read_varint(buf, pos)
            items = []
            for _ in range(count):
                item, pos = item_decoder(buf, pos)
                items.append(item)
            return items, pos

        return array
    if type_name == "String":
        return _decode_string
    fixed = _unwrap(type_name, "FixedString")
    if fixed is not None:
        size = int(fixed)
        return lambda buf, pos: (_text(bytes(buf[pos : pos + size])), pos + size)
    if _is_datetime(type_name):
        unpack_u32 = struct.Struct("<I").unpack_from
        return lambda buf, pos: (
            datetime.fromtimestamp(unpack_u32(buf, pos)[0], UTC),
            pos + 4,
        )
    if type_name.startswith("DateTime64("):
        return _datetime64_decoder(type_name)
    if type_name == "Date":
        unpack_u16 = struct.Struct("<H").unpack_from
        return lambda buf, pos: (_EPOCH_DATE + timedelta(days=unpack_u16(buf, pos)[0]), pos + 2)
    code = _FIXED.get(type_name)
    if code is None:
        raise QueryError(f"cannot read column type {type_name} from chDB; cast it in the query")
    unpacker = struct.Struct("<" + code)
    size = unpacker.size
    return lambda buf, pos: (unpacker.unpack_from(buf, pos)[0], pos + size)


def _datetime64_decoder(type_name: str) -> Decoder:
    precision = int(type_name[len("DateTime64(") : -1].split(",")[0])
    unpack_i64 = struct.Struct("<q").unpack_from
    scale = 10**precision

    def decode(buf: memoryview, pos: int) -> tuple[Any, int]:
        ticks = unpack_i64(buf, pos)[0]
        seconds, fraction = divmod(ticks, scale)
        moment = datetime.fromtimestamp(seconds, UTC)
        return moment + timedelta(microseconds=fraction * 1_000_000 // scale), pos + 8

    return decode


def _text(raw: bytes) -> str | bytes:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def _decode_string(buf: memoryview, pos: int) -> tuple[Any, int]:
    size, pos = _read_varint(buf, pos)
    end = pos + size
    return _text(bytes(buf[pos:end])), end


def decode_with_names_and_types(
    data: bytes,
) -> tuple[tuple[str, ...], tuple[str, ...], list[tuple[Any, ...]]]:
    """Parse ``RowBinaryWithNamesAndTypes`` output into (names, types, rows)."""
    if not data:
        return (), (), []
    buf = memoryview(data)
    count, pos = _read_varint(buf, 0)
    names: list[str] = []
    types: list[str] = []
    for target in (names, types):
        for _ in range(count):
            value, pos = _decode_string(buf, pos)
            target.append(value if isinstance(value, str) else value.decode(errors="replace"))
    decoders = [_decoder(name) for name in types]
    rows: list[tuple[Any, ...]] = []
    end = len(buf)
    while pos < end:
        row = []
        for decode in decoders:
            value, pos = decode(buf, pos)
            row.append(value)
        rows.append(tuple(row))
    return tuple(names), tuple(types), rows
