"""RowBinary, the chDB exchange format: exact round trips and loud failures."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sinks.errors import QueryError
from sinks.rowbinary import decode_with_names_and_types, encode_rows


def with_header(names: list[str], types: list[str], body: bytes) -> bytes:
    header = encode_rows(["UInt8"], [(len(names),)])  # one-byte varint for < 128 columns
    header += encode_rows(["String"] * len(names), [names])
    header += encode_rows(["String"] * len(types), [types])
    return header + body


def roundtrip(types: list[str], rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    names = [f"c{i}" for i in range(len(types))]
    data = with_header(names, types, encode_rows(types, rows))
    got_names, got_types, got_rows = decode_with_names_and_types(data)
    assert (list(got_names), list(got_types)) == (names, types)
    return got_rows


def test_known_bytes_of_a_row() -> None:
    # UInt32 1, String "ab", Int64 -1, DateTime 1970-01-01T00:00:02
    data = encode_rows(["UInt32", "String", "Int64", "DateTime('UTC')"], [(1, "ab", -1, 2)])
    assert data == b"\x01\x00\x00\x00" + b"\x02ab" + b"\xff" * 8 + b"\x02\x00\x00\x00"


def test_long_strings_use_multi_byte_lengths() -> None:
    text = "x" * 300
    assert encode_rows(["String"], [(text,)])[:2] == bytes([0xAC, 0x02])
    assert roundtrip(["String"], [(text,)]) == [(text,)]


int64 = st.integers(-(2**63), 2**63 - 1)
uint64 = st.integers(0, 2**64 - 1)
epoch = st.integers(0, 2**32 - 1)


@given(
    st.lists(
        st.tuples(st.binary(max_size=40), st.text(max_size=20), int64, uint64, epoch),
        max_size=30,
    )
)
def test_roundtrip_is_exact(rows: list[tuple[bytes, str, int, int, int]]) -> None:
    types = ["String", "String", "Int64", "UInt64", "DateTime('UTC')"]
    got = roundtrip(types, rows)
    assert len(got) == len(rows)
    for (raw, text, signed, unsigned, seconds), row in zip(rows, got, strict=True):
        stored = row[0] if isinstance(row[0], bytes) else row[0].encode()
        assert stored == raw
        assert row[1:4] == (text, signed, unsigned)
        assert row[4] == datetime.fromtimestamp(seconds, UTC)


def test_invalid_utf8_comes_back_as_bytes_valid_as_str() -> None:
    assert roundtrip(["String"], [(b"\xff\x00A",), ("h\u00e9",)]) == [(b"\xff\x00A",), ("h\u00e9",)]


def test_nullable_array_date_float_and_lowcardinality() -> None:
    types = ["Nullable(Int64)", "Array(String)", "Date", "Float64", "LowCardinality(String)"]
    rows = [(None, ["a", "b"], date(2024, 2, 29), 1.5, "x"), (7, [], date(1970, 1, 1), -0.25, "")]
    assert roundtrip(types, rows) == rows


def test_aware_datetimes_are_written_as_their_instant() -> None:
    paris = timezone(timedelta(hours=1))
    moment = datetime(2024, 1, 1, 1, 0, tzinfo=paris)
    (row,) = roundtrip(["UInt8", "DateTime('UTC')"], [(1, moment)])
    assert row[1] == datetime(2024, 1, 1, 0, 0, tzinfo=UTC)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(QueryError, match="naive"):
        encode_rows(["DateTime"], [(datetime(2024, 1, 1),)])


def test_out_of_range_values_are_refused() -> None:
    with pytest.raises(QueryError):
        encode_rows(["UInt32", "UInt8"], [(-1, 0)])


def test_wrong_row_width_is_refused() -> None:
    with pytest.raises(QueryError, match="2 values for 3 columns"):
        encode_rows(["UInt8", "UInt8", "UInt8"], [(1, 2)])


def test_unsupported_types_are_named() -> None:
    with pytest.raises(QueryError, match="Decimal"):
        encode_rows(["Decimal(10, 2)"], [(1,)])
    with pytest.raises(QueryError, match="UUID"):
        decode_with_names_and_types(with_header(["u"], ["UUID"], b"\x00" * 16))


def test_nullable_nothing_and_datetime64() -> None:
    body = b"\x01" + (1_700_000_000_123).to_bytes(8, "little", signed=True)
    (row,) = decode_with_names_and_types(
        with_header(["n", "t"], ["Nullable(Nothing)", "DateTime64(3, 'UTC')"], body)
    )[2]
    assert row == (None, datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC))


def test_empty_result() -> None:
    assert decode_with_names_and_types(b"") == ((), (), [])
