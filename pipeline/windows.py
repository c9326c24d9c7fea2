"""Event-time windows: which windows an event falls in, and when a window is final.

A window is identified by (kind, size, start); it covers [start, start + size) in epoch
milliseconds. Tumbling windows are hopping windows whose step equals their size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["WindowSpec", "assign", "specs_from_settings"]


@dataclass(frozen=True, slots=True)
class WindowSpec:
    kind: str  # "tumbling" or "hopping"
    size_ms: int
    step_ms: int

    def __post_init__(self) -> None:
        if self.size_ms <= 0 or self.step_ms <= 0:
            raise ValueError("window size and step must be positive")
        if self.size_ms % self.step_ms:
            raise ValueError("a window's size must be a whole number of steps")

    def starts(self, ts_ms: int) -> range:
        """Starts of every window of this spec that contains ``ts_ms``, oldest first."""
        last = ts_ms - ts_ms % self.step_ms
        first = last - self.size_ms + self.step_ms
        return range(first, last + 1, self.step_ms)


def specs_from_settings(
    tumbling_seconds: Iterable[int], hopping: Iterable[tuple[int, int]]
) -> tuple[WindowSpec, ...]:
    specs = [WindowSpec("tumbling", s * 1000, s * 1000) for s in tumbling_seconds]
    specs += [WindowSpec("hopping", size * 1000, step * 1000) for size, step in hopping]
    return tuple(specs)


def assign(ts_ms: int, specs: Iterable[WindowSpec]) -> list[tuple[WindowSpec, int]]:
    """Every (spec, window start) the timestamp falls in."""
    return [(spec, start) for spec in specs for start in spec.starts(ts_ms)]
