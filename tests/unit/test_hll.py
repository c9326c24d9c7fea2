"""Reach: exact while small, a HyperLogLog sketch beyond; the estimate kept from a running
histogram of the registers is the one computed from the registers themselves."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.hll import _M, _Q, EXACT_LIMIT, HLL_RELATIVE_ERROR, Reach, _sigma, _tau, user_hash


def _count_from_registers(registers: bytes) -> int:
    """Ertl's estimator over a histogram counted afresh from every register."""
    histogram = [0] * (_Q + 2)
    for r in registers:
        histogram[r] += 1
    z = _M * _tau(1.0 - histogram[_Q + 1] / _M)
    for k in range(_Q, 0, -1):
        z = 0.5 * (z + histogram[k])
    z += _M * _sigma(histogram[0] / _M)
    return round(_M * _M / (2.0 * math.log(2.0)) / z)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 20_000), st.integers(0, 2**32))
def test_count_equals_the_estimate_from_the_registers_also_after_a_round_trip(
    users: int, seed: int
) -> None:
    rng = random.Random(seed)
    reach = Reach()
    for _ in range(users):
        reach.add(rng.getrandbits(64))
    restored = Reach.from_state(reach.to_state())
    if users <= EXACT_LIMIT:
        assert reach.is_exact and reach.count() == restored.count() == users
        return
    assert not reach.is_exact
    registers = reach._registers
    assert registers is not None
    expected = _count_from_registers(bytes(registers))
    assert reach.count() == restored.count() == expected
    # adding to a restored sketch keeps the two in step
    more = [rng.getrandbits(64) for _ in range(500)]
    for value in more:
        reach.add(value)
        restored.add(value)
    assert restored._registers is not None
    assert reach.count() == restored.count() == _count_from_registers(bytes(restored._registers))


def test_estimate_is_within_a_few_standard_errors() -> None:
    reach = Reach()
    for user in range(50_000):
        reach.add(user_hash(f"user-{user}"))
    assert abs(reach.count() - 50_000) / 50_000 < 4 * HLL_RELATIVE_ERROR
