"""Compare what landed in ClickHouse with the simulator's ground truth.

Counts and money are compared exactly, and so is each window's final flag. Reach is a
exact up to ``EXACT_LIMIT`` users and a HyperLogLog estimate beyond: there it must be within
``REACH_TOLERANCE`` (5.5 standard errors, so that a run with hundreds of thousands of
windows does not fail by chance) of the exact count. Credited conversions are compared row
by row for every model (declared campaign, revenue and profit included), and each
campaign's declared record (the newest) field by field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.hll import EXACT_LIMIT, HLL_RELATIVE_ERROR
from pipeline.ports import CreditRow

__all__ = [
    "REACH_TOLERANCE",
    "Difference",
    "compare_campaigns",
    "compare_credits",
    "compare_dead_letters",
    "compare_skipped",
    "compare_windows",
    "credit_fields",
]

REACH_TOLERANCE = 5.5 * HLL_RELATIVE_ERROR


@dataclass(frozen=True, slots=True)
class Difference:
    where: str
    what: str
    expected: object
    actual: object

    def __str__(self) -> str:
        return f"{self.where}: {self.what} expected {self.expected}, got {self.actual}"


def _reach_ok(expected: int, actual: int) -> bool:
    if expected <= EXACT_LIMIT:
        return actual == expected
    return abs(actual - expected) <= REACH_TOLERANCE * expected


def compare_windows(
    truth: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]
) -> list[Difference]:
    """Differences between the truth's windows and stored rows (``sinks.kpi_rows``)."""
    names: Sequence[str] = truth["counters"]
    expected = {
        (w[0], w[1], w[2], int(w[3]), int(w[4])): (bool(w[5]), dict(zip(names, w[6], strict=True)))
        for w in truth["windows"]
    }
    actual = {
        (
            r["campaign_id"],
            r["channel"],
            r["window_kind"],
            int(r["window_seconds"]),
            int(r["window_start_ms"]),
        ): r
        for r in rows
    }
    diffs: list[Difference] = []
    for key in sorted(expected.keys() | actual.keys()):
        where = (
            f"campaign={key[0] or '(none)'} channel={key[1]} {key[2]} {key[3]}s "
            f"window_start_ms={key[4]}"
        )
        want, got = expected.get(key), actual.get(key)
        if want is None:
            diffs.append(Difference(where, "window", "absent", "present"))
            continue
        if got is None:
            diffs.append(Difference(where, "window", "present", "absent"))
            continue
        final, counters = want
        if bool(got["is_final"]) != final:
            diffs.append(Difference(where, "is_final", final, bool(got["is_final"])))
        for name in names:
            exp, act = int(counters[name]), int(got.get(name, 0))
            if name == "reach" and _reach_ok(exp, act):
                continue
            if exp != act:
                diffs.append(Difference(where, name, exp, act))
    return diffs


def compare_dead_letters(truth: Mapping[str, int], stored: Mapping[str, int]) -> list[Difference]:
    diffs = []
    for reason in sorted(truth.keys() | stored.keys()):
        if truth.get(reason, 0) != stored.get(reason, 0):
            diffs.append(
                Difference("dead letters", reason, truth.get(reason, 0), stored.get(reason, 0))
            )
    return diffs


def compare_skipped(
    truth: Iterable[Sequence[Any]],
    stored: Iterable[Mapping[str, Any]],
    kinds: Mapping[str, str],
) -> list[Difference]:
    """Late and duplicate events per (reason, topic kind, campaign key, channel, day):
    ``truth`` as ``Truth.skipped`` gives them, ``stored`` as ``sinks.skipped_daily`` rows,
    whose topics ``kinds`` names (topic -> kind)."""
    expected = {tuple(row[:5]): int(row[5]) for row in truth}
    actual: dict[tuple[Any, ...], int] = {}
    for row in stored:
        kind = kinds.get(row["topic"], row["topic"])
        for reason, column in (("late", "late"), ("duplicate", "duplicates")):
            if row[column]:
                key = (reason, kind, row["campaign_id"], row["channel"], row["day"])
                actual[key] = actual.get(key, 0) + int(row[column])
    diffs = []
    for key in sorted(expected.keys() | actual.keys()):
        if expected.get(key, 0) != actual.get(key, 0):
            reason, kind, campaign, channel, day = key
            diffs.append(
                Difference(
                    f"skipped {kind} {campaign!r}/{channel} {day}",
                    reason,
                    expected.get(key, 0),
                    actual.get(key, 0),
                )
            )
    return diffs


_CREDIT_FIELDS = (
    "model",
    "conversion_event_id",
    "campaign_id",
    "channel",
    "touch_event_id",
    "share_micros",
    "revenue_micros",
    "profit_micros",
)


def credit_fields(row: CreditRow) -> dict[str, Any]:
    """``row`` with the fields :func:`compare_credits` reads, as ``sinks.credited_rows``
    gives them (a row declared by ``pipeline.campaigns.declare_credits``)."""
    return {name: getattr(row, name) for name in _CREDIT_FIELDS}


def compare_credits(
    truth: Mapping[str, Sequence[Sequence[Any]]], rows: Iterable[Mapping[str, Any]]
) -> list[Difference]:
    """Credited rows per model: (conversion, declared campaign, channel, touch, share,
    revenue, profit), against ``sinks.credited_rows`` (``credited_conversions_current``)."""
    expected = {
        (model, *map(str, row[:4]), int(row[4]), int(row[5]), int(row[6]))
        for model, model_rows in truth.items()
        for row in model_rows
    }
    actual = {
        (
            r["model"],
            r["conversion_event_id"],
            r["campaign_id"],
            r["channel"],
            r["touch_event_id"],
            int(r["share_micros"]),
            int(r["revenue_micros"]),
            int(r["profit_micros"]),
        )
        for r in rows
    }
    diffs = [
        Difference(f"credit {row[0]} {row[1]} -> {row[4]}", "row", "present", "absent")
        for row in sorted(expected - actual)
    ]
    diffs += [
        Difference(f"credit {row[0]} {row[1]} -> {row[4]}", "row", "absent", "present")
        for row in sorted(actual - expected)
    ]
    return diffs


_CAMPAIGN_FIELDS = ("campaign_id", "name", "utm_campaign", "margin_ppm", "budget_micros")


def compare_campaigns(
    truth: Mapping[str, Mapping[str, Any]], rows: Iterable[Mapping[str, Any]]
) -> list[Difference]:
    """The declared campaigns (the truth's ``campaigns``, by key) against
    ``sinks.views.campaigns`` rows: id as declared, name, tag, margin, budget."""
    stored = {
        r["campaign_key"]: {
            "campaign_id": r["campaign_id"],
            "name": r["campaign_name"],
            "utm_campaign": r["utm_campaign"],
            "margin_ppm": int(r["margin_ppm"]),
            "budget_micros": int(r["budget_micros"]),
        }
        for r in rows
    }
    diffs: list[Difference] = []
    for key in sorted(truth.keys() | stored.keys()):
        want, got = truth.get(key), stored.get(key)
        if want is None or got is None:
            diffs.append(Difference(f"campaign {key}", "record", _presence(want), _presence(got)))
            continue
        for name in _CAMPAIGN_FIELDS:
            if want[name] != got[name]:
                diffs.append(Difference(f"campaign {key}", name, want[name], got[name]))
    return diffs


def _presence(value: object) -> str:
    return "absent" if value is None else "present"
