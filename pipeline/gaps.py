"""Which offsets of one partition a batch lacks.

A batch of one partition must be processed as consecutive offsets, continuing from where
the partition's state left off. The consumer under the worker does not always deliver that
(around a rebalance Faust can drop messages it had fetched and later commit past them), so
the worker reads what is missing itself: ``missing_ranges`` says what that is.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

__all__ = ["missing_ranges"]


def missing_ranges(expected: int | None, offsets: Sequence[int]) -> list[tuple[int, int]]:
    """Half-open ranges ``[start, stop)`` absent from ``offsets`` (ascending, distinct):
    between ``expected`` (the first offset the state has not seen; ``None`` when it has seen
    none and anything may start the partition) and the first offset, and between offsets.

    An offset below ``expected`` is a replay, which the state handles; only what lies after
    both what was seen and what arrived first counts as missing before the batch.
    """
    ranges: list[tuple[int, int]] = []
    if not offsets:
        return ranges
    if expected is not None and expected < offsets[0]:
        ranges.append((expected, offsets[0]))
    for before, after in pairwise(offsets):
        if after > before + 1:
            ranges.append((before + 1, after))
    return ranges
