"""Progress of long work (``simulate``, ``replay``, ``worker``): how much is done, how fast,
and how long the rest will take.

On a terminal it is one live line (rich, on stderr, so stdout keeps only the command's
result); otherwise, e.g. under systemd or in a container, an INFO log line at most every
``every`` seconds, and none while nothing moves, so an idle worker's log stays quiet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

__all__ = ["Reporter"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Reporter:
    """Reports ``done`` (a running count of ``unit``) out of ``total`` when known, its rate
    over the last ``window`` seconds, and an ETA from what remains: ``total - done``, or
    the ``waiting`` backlog (a worker's lag) when there is no total."""

    def __init__(
        self,
        what: str,
        unit: str,
        total: int | None = None,
        *,
        console: Console | None = None,
        every: float = 30.0,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._what, self._unit, self._total = what, unit, total
        self._console = console if console is not None else Console(stderr=True)
        self._terminal = self._console.is_terminal
        self._every, self._window, self._clock = every, window, clock
        self._samples: list[tuple[float, int]] = [(clock(), 0)]
        self._logged_at = clock()
        self._logged_done = 0
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if self._terminal:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[status]}"),
                console=self._console,
                transient=False,
            )
            self._task = self._progress.add_task(what, total=total, status="")
            self._progress.start()

    def line(self, done: int, waiting: int | None = None) -> str:
        """What is shown: ``12,000/20,000 messages sent, 3,950/s, 2s left``."""
        now = self._clock()
        samples = self._samples
        samples.append((now, done))
        while len(samples) > 2 and now - samples[1][0] > self._window:
            samples.pop(0)
        (then, before) = samples[0]
        rate = (done - before) / (now - then) if now > then else 0.0
        count = f"{done:,}" if self._total is None else f"{done:,}/{self._total:,}"
        text = f"{count} {self._unit}, {rate:,.0f}/s"
        remaining = (self._total - done) if self._total is not None else waiting
        if waiting is not None:
            text += f", {waiting:,} waiting"
        if remaining is not None and remaining > 0 and rate > 0:
            text += f", {_duration(remaining / rate)} left"
        return text

    def update(self, done: int, waiting: int | None = None) -> None:
        text = self.line(done, waiting)
        if self._progress is not None:
            assert self._task is not None
            self._progress.update(self._task, completed=done, status=text)
            return
        now = self._clock()
        moved = done != self._logged_done or bool(waiting)
        if now - self._logged_at >= self._every and moved:
            log.info("%s: %s", self._what, text)
            self._logged_at, self._logged_done = now, done

    def counted(self, items: Iterable[T], step: int = 500) -> Iterator[T]:
        """``items`` unchanged, reporting every ``step`` of them (and at the end)."""
        done = 0
        for item in items:
            yield item
            done += 1
            if done % step == 0:
                self.update(done)
        self.update(done)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
