"""Attribution models: how one conversion's credit is shared among its touchpoints.

Credit is integer micro-units of one conversion (1,000,000 = one whole conversion) and
shares always sum to exactly that, by the largest-remainder method with ties broken by
touch order; money is split the same way, so no micro-unit is created or lost.

Touchpoints are the user's non-late touches with ``conversion time - lookback <= time <=
conversion time``, oldest first (ties by source position).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.kpi import MICROS
from pipeline.settings import AttributionModel

__all__ = ["Touch", "credit_shares", "split"]

_FIRST_LAST = 0.4  # position based: 40% first, 40% last, 20% spread over the middle


@dataclass(slots=True)
class Touch:
    ts_ms: int
    campaign_id: str
    channel: str
    touch_type: str
    event_id: str
    order: tuple[str, int]  # (source, offset): ties in time are broken by position

    def sort_key(self) -> tuple[int, str, int]:
        return (self.ts_ms, *self.order)


def split(amount: int, weights: Sequence[float | int]) -> list[int]:
    """``amount`` split in proportion to ``weights``, summing exactly to ``amount``."""
    if not weights or sum(weights) <= 0 or min(weights) < 0:
        raise ValueError("weights must be non-negative and not all zero")
    if all(isinstance(w, int) for w in weights):
        total = int(sum(weights))
        parts = [amount * int(w) // total for w in weights]
        fractions = [amount * int(w) % total / total for w in weights]
    else:
        ftotal = float(sum(weights))
        exact = [amount * float(w) / ftotal for w in weights]
        parts = [int(x // 1) for x in exact]
        fractions = [x - p for x, p in zip(exact, parts, strict=True)]
    remainder = amount - sum(parts)
    order = sorted(range(len(parts)), key=lambda i: (-fractions[i], i))
    for i in order[:remainder]:
        parts[i] += 1
    return parts


def _weights(
    touches: Sequence[Touch], conversion_ms: int, model: AttributionModel, half_life_ms: int
) -> list[float]:
    n = len(touches)
    if model is AttributionModel.LAST_TOUCH:
        return [0.0] * (n - 1) + [1.0]
    if model is AttributionModel.FIRST_TOUCH:
        return [1.0] + [0.0] * (n - 1)
    if model is AttributionModel.LINEAR:
        return [1.0] * n
    if model is AttributionModel.TIME_DECAY:
        return [2.0 ** (-(conversion_ms - t.ts_ms) / half_life_ms) for t in touches]
    if n == 1:
        return [1.0]
    if n == 2:
        return [0.5, 0.5]
    middle = (1 - 2 * _FIRST_LAST) / (n - 2)
    return [_FIRST_LAST] + [middle] * (n - 2) + [_FIRST_LAST]


def credit_shares(
    touches: Sequence[Touch], conversion_ms: int, model: AttributionModel, half_life_ms: int
) -> list[int]:
    """Credit of each touch (in order given, oldest first) in micro-conversions."""
    if not touches:
        return []
    return split(MICROS, _weights(touches, conversion_ms, model, half_life_ms))
