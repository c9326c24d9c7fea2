"""Reach: distinct users per window, exact while small, a HyperLogLog sketch beyond.

Up to ``EXACT_LIMIT`` users the window keeps their 64-bit hashes (exact; 8 bytes each).
Past that it keeps a HyperLogLog of precision 12 (4,096 one-byte registers) read with
Ertl's improved estimator ("New cardinality estimation algorithms for HyperLogLog
sketches", 2017), which has no bias to correct across the whole range: relative standard
error 1.04 / sqrt(4096) = 1.6%. Users are hashed with BLAKE2b, so the result is the same
on every machine and run, and replays add nothing (a register only grows).
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from typing import Final

__all__ = ["EXACT_LIMIT", "HLL_RELATIVE_ERROR", "RANK_BITS", "Reach", "estimate", "user_hash"]

EXACT_LIMIT: Final = 128
_P: Final = 12
_M: Final = 1 << _P
_Q: Final = 64 - _P
HLL_RELATIVE_ERROR: Final = 1.04 / math.sqrt(_M)
# A register code is ``index << RANK_BITS | rank``: ranks are at most _Q + 1 = 53 < 64.
RANK_BITS: Final = 6
_RANK_MASK: Final = (1 << RANK_BITS) - 1
_EXACT_ITEM = struct.Struct("<Q")


def user_hash(user_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=8).digest(), "big")


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        previous = z
        z += x * y
        y += y
        if z == previous:
            return z


def _tau(x: float) -> float:
    if x in (0.0, 1.0):
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = math.sqrt(x)
        previous = z
        y *= 0.5
        z -= (1.0 - x) ** 2 * y
        if z == previous:
            return z / 3.0


class Reach:
    # _histogram[r]: how many registers hold r, kept as registers grow, so ``count`` (asked
    # for every snapshot) reads 54 numbers rather than 4,096 registers.
    __slots__ = ("_exact", "_histogram", "_registers")

    def __init__(self, exact: set[int] | None = None, registers: bytearray | None = None) -> None:
        self._exact = exact if registers is None else None
        if self._exact is None and registers is None:
            self._exact = set()
        self._registers = registers
        self._histogram: list[int] | None = None
        if registers is not None:
            self._histogram = [0] * (_Q + 2)
            for r in registers:
                self._histogram[r] += 1

    @property
    def is_exact(self) -> bool:
        return self._registers is None

    def add(self, value: int) -> None:
        if self._exact is not None:
            self._exact.add(value)
            if len(self._exact) > EXACT_LIMIT:
                self._registers = bytearray(_M)
                self._histogram = [0] * (_Q + 2)
                self._histogram[0] = _M
                for v in self._exact:
                    self._register(v)
                self._exact = None
            return
        self._register(value)

    def _register(self, value: int) -> None:
        assert self._registers is not None and self._histogram is not None
        index = value >> _Q
        rank = _Q - (value & ((1 << _Q) - 1)).bit_length() + 1
        old = self._registers[index]
        if rank > old:
            self._registers[index] = rank
            self._histogram[old] -= 1
            self._histogram[rank] += 1

    def users(self) -> tuple[int, ...]:
        """The users' hashes while the reach is exact, else ``()``."""
        return tuple(sorted(self._exact)) if self._exact is not None else ()

    def codes(self) -> list[int]:
        """The registers this sketch sets, as codes (``index << RANK_BITS | rank``, one per
        non-zero register, ascending). An exact set gives the registers its users would set,
        so panes compose by taking, per register index, the highest rank (:func:`estimate`)."""
        if self._exact is not None:
            best: dict[int, int] = {}
            for value in self._exact:
                index, rank = value >> _Q, _rank(value)
                if rank > best.get(index, 0):
                    best[index] = rank
            return [index << RANK_BITS | rank for index, rank in sorted(best.items())]
        assert self._registers is not None
        return [i << RANK_BITS | r for i, r in enumerate(self._registers) if r]

    def to_bytes(self) -> bytes:
        """Binary form for the changelog: ``x`` + 8-byte hashes, or ``h`` + 4,096 registers."""
        if self._exact is not None:
            return b"x" + struct.pack(f"<{len(self._exact)}Q", *self._exact)
        assert self._registers is not None
        return b"h" + bytes(self._registers)

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> Reach:
        if not data:
            return cls()
        body = bytes(data[1:])
        if data[0] == ord("h"):
            return cls(registers=bytearray(body))
        return cls(exact={v for (v,) in _EXACT_ITEM.iter_unpack(body)})

    def count(self) -> int:
        if self._exact is not None:
            return len(self._exact)
        assert self._histogram is not None
        histogram = self._histogram
        z = _M * _tau(1.0 - histogram[_Q + 1] / _M)
        for k in range(_Q, 0, -1):
            z = 0.5 * (z + histogram[k])
        z += _M * _sigma(histogram[0] / _M)
        return round(_M * _M / (2.0 * math.log(2.0)) / z)

    def to_state(self) -> str:
        if self._exact is not None:
            packed = struct.pack(f">{len(self._exact)}Q", *sorted(self._exact))
            return "x" + base64.b64encode(packed).decode()
        assert self._registers is not None
        return "h" + base64.b64encode(bytes(self._registers)).decode()

    @classmethod
    def from_state(cls, state: str | None) -> Reach:
        if not state:
            return cls()
        raw = base64.b64decode(state[1:])
        if state[0] == "h":
            return cls(registers=bytearray(raw))
        return cls(exact=set(struct.unpack(f">{len(raw) // 8}Q", raw)))


def _rank(value: int) -> int:
    return _Q - (value & ((1 << _Q) - 1)).bit_length() + 1


def estimate(codes: list[int]) -> int:
    """Distinct users of a union of sketches given all their register codes (repeats and
    lower ranks of an index allowed): Ertl's estimator over the merged registers, the same
    figure :meth:`Reach.count` gives for one sketch. The reader views compute exactly this
    in SQL to compose rolling windows from panes (``sinks/migrations/0008``):
    ``m^2 / (2 ln 2 * (sum over set registers of 2^-rank + m * sigma(unset / m)))``.
    (Ertl's tau term is left out there and here: it needs a register at rank 53, which
    takes a 2^-53 chance per user.)"""
    best: dict[int, int] = {}
    for code in codes:
        index, rank = code >> RANK_BITS, code & _RANK_MASK
        if rank > best.get(index, 0):
            best[index] = rank
    unset = _M - len(best)
    if unset == _M:
        return 0
    z = sum(2.0**-rank for rank in best.values()) + _M * _sigma(unset / _M)
    return round(_M * _M / (2.0 * math.log(2.0)) / z)
