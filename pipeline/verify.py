"""Compare what landed in ClickHouse with the simulator's ground truth.

Counts and money are compared exactly. Only counters the truth names are compared, so the
truth file states what a run promises.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Difference", "compare_dead_letters", "compare_windows"]


@dataclass(frozen=True, slots=True)
class Difference:
    where: str
    what: str
    expected: object
    actual: object

    def __str__(self) -> str:
        return f"{self.where}: {self.what} expected {self.expected}, got {self.actual}"


def _where(campaign: str, channel: str, start_ms: int) -> str:
    return f"campaign={campaign or '(none)'} channel={channel} window_start_ms={start_ms}"


def compare_windows(
    truth_windows: Iterable[Mapping[str, Any]], rows: Iterable[Mapping[str, Any]]
) -> list[Difference]:
    """Differences between truth windows and stored rows of the same window size.

    Rows carry ``campaign_id``, ``channel``, ``window_start_ms`` and one key per counter.
    """
    expected = {
        (w["campaign_id"], w["channel"], int(w["window_start_ms"])): w["counters"]
        for w in truth_windows
    }
    names = sorted({name for counters in expected.values() for name in counters})
    actual = {(r["campaign_id"], r["channel"], int(r["window_start_ms"])): r for r in rows}
    diffs: list[Difference] = []
    for key in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(key), actual.get(key)
        if want is None:
            assert got is not None
            if any(int(got.get(n, 0)) for n in names):
                diffs.append(Difference(_where(*key), "window", "absent", "present"))
            continue
        if got is None:
            diffs.append(Difference(_where(*key), "window", "present", "absent"))
            continue
        for name in names:
            if int(want.get(name, 0)) != int(got.get(name, 0)):
                diffs.append(
                    Difference(_where(*key), name, int(want.get(name, 0)), int(got.get(name, 0)))
                )
    return diffs


def compare_dead_letters(truth: Mapping[str, int], stored: Mapping[str, int]) -> list[Difference]:
    diffs = []
    for reason in sorted(truth.keys() | stored.keys()):
        if truth.get(reason, 0) != stored.get(reason, 0):
            diffs.append(
                Difference("dead letters", reason, truth.get(reason, 0), stored.get(reason, 0))
            )
    return diffs
