"""Progress of long work: a live line on a terminal, sparse INFO lines otherwise."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from streams.present.progress import Reporter


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_line_says_done_rate_and_time_left() -> None:
    clock = _Clock()
    quiet = Console(file=io.StringIO(), force_terminal=False)
    reporter = Reporter("simulate", "messages sent", 20_000, console=quiet, clock=clock)
    clock.now += 4
    assert reporter.line(8_000) == "8,000/20,000 messages sent, 2,000/s, 6s left"
    clock.now += 4  # slower now: the rate is over the last 10 s
    assert reporter.line(12_000) == "12,000/20,000 messages sent, 1,500/s, 5s left"
    worker = Reporter("worker", "messages consumed", console=quiet, clock=clock)
    clock.now += 2
    assert worker.line(600, waiting=18_000) == (
        "600 messages consumed, 300/s, 18,000 waiting, 1m00s left"
    )


def test_on_a_terminal_it_is_a_live_bar() -> None:
    out = io.StringIO()
    terminal = Console(file=out, force_terminal=True, width=120)
    clock = _Clock()
    reporter = Reporter("replay", "events sent", 1_000, console=terminal, clock=clock)
    clock.now += 1
    list(reporter.counted(range(1_000), step=100))
    reporter.close()
    text = out.getvalue()
    assert "replay" in text and "1,000/1,000 events sent" in text


def test_elsewhere_it_logs_at_most_every_interval_and_not_while_idle(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    quiet = Console(file=io.StringIO(), force_terminal=False)
    reporter = Reporter("worker", "messages consumed", console=quiet, every=60, clock=clock)
    with caplog.at_level(logging.INFO, logger="streams.present.progress"):
        for second in range(1, 181):
            clock.now += 1
            reporter.update(second * 100 if second <= 120 else 12_000, waiting=0)
    lines = [r.getMessage() for r in caplog.records]
    # minutes 1 and 2 moved; minute 3 consumed nothing and had nothing waiting
    assert lines == [
        "worker: 6,000 messages consumed, 100/s, 0 waiting",
        "worker: 12,000 messages consumed, 100/s, 0 waiting",
    ]
    assert quiet.file.getvalue() == ""  # type: ignore[attr-defined]
