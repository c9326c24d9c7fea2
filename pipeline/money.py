"""Money in one base currency, as integer micro-units so sums are exact.

Rates are base-currency units per one unit of a currency (``USD,0.92`` with base EUR).
Conversion rounds half-even to the micro-unit, once per amount.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path

__all__ = ["Rates", "RatesError", "to_micros"]

_MICRO = Decimal(1)


class RatesError(ValueError):
    """A rates table that cannot be used, or a currency it does not know."""


def to_micros(amount: float | int | str | Decimal, rate: Decimal = Decimal(1)) -> int:
    """``amount`` (a JSON number) times ``rate``, in micro-units, rounded half-even."""
    value = Decimal(str(amount)) * rate * 1_000_000
    return int(value.quantize(_MICRO, rounding=ROUND_HALF_EVEN))


class Rates:
    """Conversion to the base currency; the base itself always converts at 1."""

    def __init__(self, base: str, rates: Mapping[str, Decimal] | None = None) -> None:
        self.base = base.upper()
        self._rates = {k.upper(): v for k, v in (rates or {}).items()}
        self._rates[self.base] = Decimal(1)

    @classmethod
    def from_file(cls, base: str, path: Path | None) -> Rates:
        """Read a ``currency,rate`` CSV (header optional); no file means base currency only."""
        if path is None:
            return cls(base)
        rates: dict[str, Decimal] = {}
        try:
            with path.open(newline="", encoding="utf-8") as handle:
                for lineno, row in enumerate(csv.reader(handle), start=1):
                    if not row or row[0].strip().lower() in {"currency", ""}:
                        continue
                    try:
                        rate = Decimal(row[1].strip())
                    except (IndexError, InvalidOperation) as exc:
                        raise RatesError(f"{path}:{lineno}: expected 'currency,rate'") from exc
                    if not rate.is_finite() or rate <= 0:
                        raise RatesError(f"{path}:{lineno}: rate must be a positive number")
                    rates[row[0].strip().upper()] = rate
        except OSError as exc:
            raise RatesError(f"cannot read rates file {path}: {exc.strerror}") from exc
        return cls(base, rates)

    def knows(self, currency: str) -> bool:
        return currency.upper() in self._rates

    def as_table(self) -> dict[str, str]:
        return {k: str(v) for k, v in sorted(self._rates.items())}

    def micros(self, amount: float | int, currency: str) -> int:
        """``amount`` of ``currency`` in base-currency micro-units."""
        try:
            rate = self._rates[currency.upper()]
        except KeyError:
            raise RatesError(f"no rate for {currency} in base {self.base}") from None
        return to_micros(amount, rate)
