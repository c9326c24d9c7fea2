"""Logging set-up: readable lines for people, one JSON object per line in production.

Two filters sit on the one handler, so every logger (ours, Faust's, aiokafka's) goes
through them:

* :class:`RepeatFilter`: a WARNING or ERROR that repeats (same logger, level and message
  template) is logged the first time only; while it keeps coming, one summary line per
  interval says how often, since when and that it is still failing; once it has not come
  for a while, one line says it recovered, with the totals. A broker outage that made
  aiokafka log thousands of identical lines a second is a few lines per distinct message.
* :class:`FalseAlarms`: Faust's checks of its own fetch path (``Stream has not started
  processing``, ``Aiokafka stopped fetching``, ``Has not committed``... after
  ``stream_processing_timeout``) and its consumer thread's ``Thread keepalive is not
  responding`` are dropped. The worker reads its partitions itself and keeps Faust's
  fetching of them paused, so those checks fire on every partition of every healthy
  worker; the worker's own check (readiness: messages waiting 30 s with none consumed,
  logged once) says the truth instead, and batch times are in ``socialroi_batch_seconds``.
  So is kafka-python's ``Task ... ran for 0.39s (>0.100s threshold). It is blocking the
  event loop``: a step of its I/O thread took over 0.1 s (seen at start-up on a loaded
  machine), a latency note about the client's internals, not a fault.

What the filters keep out of the log is counted (:func:`counts`), and ``streams.metrics``
exports it: ``socialroi_log_repeats_suppressed_total{level}``,
``socialroi_log_silenced_total{check}``.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import orjson

__all__ = ["FalseAlarms", "RepeatFilter", "configure", "counts"]

log = logging.getLogger(__name__)

# Set on the records this module logs itself, so the filters let them through.
_OWN = "socialroi_log_summary"
# Long messages (Faust's are paragraphs) are cut in summaries: the first line says enough.
_SUMMARY_CHARS = 300


class _Counts:
    """Process-wide totals of what the filters kept out of the log (metrics read them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.suppressed: dict[str, int] = {}
        self.silenced: dict[str, int] = {}

    def add(self, table: dict[str, int], key: str) -> None:
        with self._lock:
            table[key] = table.get(key, 0) + 1

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        with self._lock:
            return dict(self.suppressed), dict(self.silenced)


_COUNTS = _Counts()


def counts() -> tuple[dict[str, int], dict[str, int]]:
    """(repeats suppressed by level name, messages silenced by check) in this process."""
    return _COUNTS.snapshot()


def _utc(seconds: float) -> str:
    return time.strftime("%H:%M:%SZ", time.gmtime(seconds))


def _first_line(message: str) -> str:
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line if len(line) <= _SUMMARY_CHARS else line[:_SUMMARY_CHARS] + "..."


@dataclass
class _Repeat:
    logger: str
    level: int
    message: str  # the newest occurrence, rendered
    first_at: float  # wall clock, for people
    last_seen: float  # monotonic
    last_at: float  # wall clock
    summarised: float  # monotonic: when the last summary (or the first line) went out
    total: int = 0  # repeats after the first line
    since_summary: int = 0


class RepeatFilter(logging.Filter):
    """Lets the first of a repeated WARNING/ERROR through and holds back its repeats.

    A message is "the same" when its logger, level and template (``record.msg``, before
    ``%`` arguments) are. :meth:`tick` (called every second by a daemon thread that
    :func:`configure` starts) logs, per held-back message, a summary every
    ``summary_seconds`` while it repeats ("still failing"), and one line once it has not
    come for ``quiet_seconds`` ("recovered", INFO). :meth:`flush` (at exit) logs what is
    still held back. ``summary_seconds=0`` turns the filter off. Lower levels pass.
    """

    def __init__(
        self,
        summary_seconds: float = 30.0,
        quiet_seconds: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        out: logging.Logger | None = None,
    ) -> None:
        super().__init__()
        self.summary_seconds = summary_seconds
        self.quiet_seconds = quiet_seconds
        self._clock = clock
        self._wall = wall
        self._out = out or log
        self._lock = threading.Lock()
        self._repeats: dict[tuple[str, int, str], _Repeat] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if self.summary_seconds <= 0 or record.levelno < logging.WARNING:
            return True
        if getattr(record, _OWN, False):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now, wall = self._clock(), self._wall()
        with self._lock:
            repeat = self._repeats.get(key)
            if repeat is None:
                self._repeats[key] = _Repeat(record.name, record.levelno, "", wall, now, wall, now)
                return True
            repeat.total += 1
            repeat.since_summary += 1
            repeat.last_seen, repeat.last_at = now, wall
            try:
                repeat.message = record.getMessage()
            except Exception:  # a bad format is the caller's bug; do not lose the count
                repeat.message = str(record.msg)
        _COUNTS.add(_COUNTS.suppressed, record.levelname)
        return False

    def tick(self) -> None:
        """Log the summaries and recoveries that are due."""
        now = self._clock()
        due: list[tuple[int, str, tuple[object, ...]]] = []
        with self._lock:
            for key, repeat in list(self._repeats.items()):
                quiet = now - repeat.last_seen >= self.quiet_seconds
                if quiet:
                    del self._repeats[key]
                    if repeat.total:
                        due.append(self._recovered(repeat, now))
                elif repeat.since_summary and now - repeat.summarised >= self.summary_seconds:
                    due.append(self._still_failing(repeat))
                    repeat.since_summary, repeat.summarised = 0, now
        for level, template, args in due:
            self._out.log(level, template, *args, extra={_OWN: True})

    def flush(self) -> None:
        """Log every repeat still held back (at exit: nothing is lost from the count)."""
        with self._lock:
            pending = [r for r in self._repeats.values() if r.since_summary]
            self._repeats.clear()
        for repeat in pending:
            level, template, args = self._still_failing(repeat)
            self._out.log(level, template + " (at exit)", *args, extra={_OWN: True})

    @staticmethod
    def _still_failing(repeat: _Repeat) -> tuple[int, str, tuple[object, ...]]:
        return (
            repeat.level,
            "still failing: repeated %d more times since the last summary, %d since %s "
            "(last %s): %s: %s",
            (
                repeat.since_summary,
                repeat.total,
                _utc(repeat.first_at),
                _utc(repeat.last_at),
                repeat.logger,
                _first_line(repeat.message),
            ),
        )

    def _recovered(self, repeat: _Repeat, now: float) -> tuple[int, str, tuple[object, ...]]:
        return (
            logging.INFO,
            "recovered: not seen for %.0f s; repeated %d times from %s to %s: %s: %s",
            (
                now - repeat.last_seen,
                repeat.total,
                _utc(repeat.first_at),
                _utc(repeat.last_at),
                repeat.logger,
                _first_line(repeat.message),
            ),
        )


def _faust_fetch_check_templates() -> tuple[str, ...]:
    """The first words of Faust's fetch-path checks, from Faust itself (so a reworded
    release is still recognised), if its Kafka driver is loaded."""
    module = sys.modules.get("faust.transport.drivers.aiokafka")
    if module is None:
        return ()
    return tuple(
        value.split("%", 1)[0].strip()
        for name, value in vars(module).items()
        if name.startswith("SLOW_PROCESSING_")
        and not name.startswith(("SLOW_PROCESSING_CAUSE", "SLOW_PROCESSING_EXPLAINED"))
        and isinstance(value, str)
    )


class FalseAlarms(logging.Filter):
    """Drops Faust's fetch-path checks, its thread keepalive messages and kafka-python's
    slow-task notes (see the module docstring for why they are false alarms for this
    worker), counting each."""

    _KEEPALIVE = "Thread keepalive is not responding"
    _SLOW_TASK = "It is blocking the event loop"

    def __init__(self) -> None:
        super().__init__()
        self._templates: tuple[str, ...] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        message = str(record.msg)
        if record.name == "kafka.net.selector" and self._SLOW_TASK in message:
            _COUNTS.add(_COUNTS.silenced, "kafka_slow_task")
            return False
        if not record.name.startswith(("faust", "mode")):
            return True
        if self._KEEPALIVE in message:
            _COUNTS.add(_COUNTS.silenced, "thread_keepalive")
            return False
        if record.name == "faust.transport.drivers.aiokafka":
            if not self._templates:
                self._templates = _faust_fetch_check_templates()
            # Faust's service logger puts its own '[^--Name]: ' in front of the template.
            if any(t in message for t in self._templates if t):
                _COUNTS.add(_COUNTS.silenced, "faust_fetch_path")
                return False
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def _ticker(repeats: RepeatFilter, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        repeats.tick()


_installed: tuple[RepeatFilter, threading.Event, logging.StreamHandler[TextIO]] | None = None


def configure(
    level: str,
    json_logs: bool,
    repeat_summary_seconds: float = 30.0,
    repeat_quiet_seconds: float = 10.0,
) -> RepeatFilter:
    """Install the one handler (stderr) with both filters; returns the repeat filter.

    Calling it again replaces the handler and the filter (their held-back repeats are
    logged first)."""
    global _installed
    if _installed is not None:
        _flush_at_exit()
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    repeats = RepeatFilter(repeat_summary_seconds, repeat_quiet_seconds)
    handler.addFilter(FalseAlarms())
    handler.addFilter(repeats)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Faust and aiokafka are chatty at INFO; their warnings still show.
    for name in ("faust", "aiokafka", "kafka", "mode"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    stop = threading.Event()
    if repeat_summary_seconds > 0:
        threading.Thread(
            target=_ticker, args=(repeats, stop), name="log-repeats", daemon=True
        ).start()
    _installed = (repeats, stop, handler)
    return repeats


@atexit.register
def _flush_at_exit() -> None:
    if _installed is not None:
        repeats, stop, handler = _installed
        stop.set()
        # Under a test runner stderr may already be closed; then there is nowhere to say it.
        if not getattr(handler.stream, "closed", False):
            repeats.flush()
