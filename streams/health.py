"""What ``/healthz`` (alive) and ``/readyz`` (ready) answer, for the worker and the collector.

Liveness and readiness mean different things, and a probe acts on each differently: a
process that is not alive is restarted, one that is not ready gets no traffic (and, for a
worker, is a signal to look). So:

- not alive: the event loop has stopped turning (a blocking call, a deadlock), or the
  worker's batches have stopped reaching messages that wait, and ClickHouse refusing
  writes does not explain it. A restart is the cure.
- not ready: starting, stopping, ClickHouse refusing writes, a rebalance or table recovery,
  no partition, or messages waiting with none consumed for a short while (worker); Kafka
  refusing events (collector). Waiting is the cure: these end by themselves, and a restart
  would only start them again (a restart during table recovery begins the recovery anew).

Every check runs in two halves: the event loop records numbers (a heartbeat, the lag it
measured), and the metrics server's thread reads them when probed. A frozen loop cannot
answer for itself, so the thread notices its heartbeat getting old.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

__all__ = [
    "HEARTBEAT_SECONDS",
    "STALL_SECONDS",
    "Liveness",
    "ProduceReadiness",
    "Progress",
    "Readiness",
]

log = logging.getLogger(__name__)

# How long messages may wait in a worker's partitions with no batch taking any before it
# is not ready: a batch is taken every ``batch_within_seconds`` while there is lag, so
# this is a stall, not a slow batch. Liveness waits longer (``liveness_seconds``).
STALL_SECONDS = 30.0
# How often the event loop proves it turns.
HEARTBEAT_SECONDS = 1.0


class _Outage(Protocol):
    @property
    def outage(self) -> bool: ...


class Progress(Protocol):
    """What readiness and liveness ask of the worker (``streams.worker.Worker`` is one)."""

    @property
    def sink(self) -> _Outage: ...

    @property
    def last_progress_at(self) -> float:
        """``time.monotonic()`` when a batch last reached offsets the state had not seen."""
        ...

    @property
    def batch_since(self) -> float | None:
        """``time.monotonic()`` when the batch under way began (``None``: none is). A batch
        that hangs has already moved the worker's live state past its offsets, so the lag
        no longer shows the messages it holds: its age does."""
        ...

    def settled(self) -> bool:
        """No rebalance or table recovery under way, and ClickHouse takes writes."""
        ...


class Readiness:
    """The worker's ``/readyz``: ready means making progress. Not ready while starting or
    stopping, while ClickHouse refuses writes, while a rebalance or table recovery runs,
    while no partition is assigned, and while messages have waited in the assigned
    partitions for ``stall_seconds`` with no batch taking any.

    ``observe`` runs on the event loop (each consumer metrics round); ``__call__`` only
    reads the last answer, from the metrics server's thread."""

    def __init__(
        self,
        worker: Progress,
        stall_seconds: float = STALL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._worker = worker
        self._stall_seconds = stall_seconds
        self._clock = clock
        self._lagging_since: float | None = None
        self._reason: str | None = "starting"

    def __call__(self) -> str | None:
        """Why the worker is not ready, or ``None`` when it is."""
        return self._reason

    def stopping(self) -> None:
        self._reason = "stopping"

    def observe(self, assigned: int | None, lag: int | None) -> None:
        """Decide readiness from the assigned consumed partitions and their total lag
        (``None``: not known, e.g. while the assignment changes)."""
        now = self._clock()
        if not lag:
            self._lagging_since = None
        elif self._lagging_since is None:
            self._lagging_since = now
        worker = self._worker
        if worker.sink.outage:
            reason: str | None = "ClickHouse refuses writes"
        elif not worker.settled():
            reason = "rebalance or table recovery under way"
        elif assigned is None or lag is None:
            reason = "assignment not known yet"
        elif assigned == 0:
            reason = "no partition assigned"
        elif (
            self._lagging_since is not None
            and now - max(self._lagging_since, worker.last_progress_at) > self._stall_seconds
        ):
            reason = (
                f"{lag} messages waiting, none consumed for "
                f"{now - max(self._lagging_since, worker.last_progress_at):.0f}s"
            )
        else:
            reason = None
        if reason != self._reason:
            log.info("readiness: %s", "ready" if reason is None else f"not ready: {reason}")
        self._reason = reason


class Liveness:
    """``/healthz``: alive unless the event loop has not turned for ``timeout`` seconds,
    or (with a ``worker``) messages have waited that long in its assigned partitions with
    no batch reaching any. Waiting on ClickHouse (an outage the sink reports) restarts the
    count: the worker resumes by itself once ClickHouse is back, and a restart would not
    bring it back sooner. A ClickHouse write that hangs without failing is not an outage,
    so it counts; so does a rebalance or a table recovery that has not ended after
    ``timeout`` (one waits for the batch under way, so a hung batch shows as a rebalance
    that never ends). While the assignment changes the lag is not measured, and the last
    one measured stands.

    ``run`` (the heartbeat) and ``observe`` run on the event loop; ``__call__`` runs on
    the metrics server's thread and reads only what they left."""

    def __init__(
        self,
        timeout: float,
        worker: Progress | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._timeout = timeout
        self._worker = worker
        self._clock = clock
        self._beat_at = clock()
        self._lagging_since: float | None = None
        self._lag = 0

    def beat(self) -> None:
        self._beat_at = self._clock()

    async def run(self, stop: asyncio.Event, interval: float = HEARTBEAT_SECONDS) -> None:
        """Beat every ``interval`` on the event loop until ``stop`` is set."""
        while not stop.is_set():
            self.beat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    def observe(self, lag: int | None) -> None:
        """The assigned partitions' total lag (``None``: not known), on the event loop."""
        worker = self._worker
        if lag is None:
            lag = self._lag if self._lagging_since is not None else 0
        if not lag or worker is None or worker.sink.outage:
            self._lagging_since = None
        elif self._lagging_since is None:
            self._lagging_since = self._clock()
        self._lag = lag

    def __call__(self) -> str | None:
        """Why the process is not alive, or ``None`` when it is."""
        now = self._clock()
        silent = now - self._beat_at
        if silent > self._timeout:
            return f"event loop has not turned for {silent:.0f}s"
        since, worker = self._lagging_since, self._worker
        if worker is None:
            return None
        busy = worker.batch_since
        if busy is not None and now - busy > self._timeout and not worker.sink.outage:
            return f"a batch has been under way for {now - busy:.0f}s"
        if since is not None:
            stuck = now - max(since, worker.last_progress_at)
            if stuck > self._timeout:
                return f"{self._lag} messages waiting, no batch reached any for {stuck:.0f}s"
        return None


class ProduceReadiness:
    """The collector's ``/readyz``: not ready while starting or stopping, and once Kafka
    refused a request's events, until a later request is acknowledged or ``probe`` (run
    every ``interval`` while refused, off the event loop) finds a broker answering again;
    otherwise a collector taken out of rotation would never get the request that proves
    it recovered."""

    def __init__(self, probe: Callable[[], bool], interval: float = 5.0) -> None:
        self._probe = probe
        self._interval = interval
        self._reason: str | None = "starting"

    def __call__(self) -> str | None:
        return self._reason

    def _set(self, reason: str | None) -> None:
        if reason != self._reason:
            log.info("readiness: %s", "ready" if reason is None else f"not ready: {reason}")
        self._reason = reason

    def started(self) -> None:
        self._set(None)

    def stopping(self) -> None:
        self._set("stopping")

    def acknowledged(self) -> None:
        """Kafka acknowledged a request's events."""
        if self._reason != "stopping":
            self._set(None)

    def refused(self, error: str) -> None:
        """Kafka did not acknowledge a request's events (``error``: the exception's type)."""
        if self._reason != "stopping":
            self._set(f"Kafka refused events ({error})")

    async def run(self, stop: asyncio.Event) -> None:
        """While refused, probe every ``interval`` until ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval)
            reason = self._reason
            if reason is None or reason in ("starting", "stopping") or stop.is_set():
                continue
            if await asyncio.to_thread(self._probe) and self._reason == reason:
                self._set(None)
