"""The ClickHouse sink: buffers KPI snapshots and dead letters, writes them in batches.

Contract (:class:`pipeline.ports.SnapshotSink`):

* ``add_snapshots`` / ``add_dead_letters`` only buffer (and validate: a row that could not be
  stored raises :class:`~sinks.tables.RowError` at once). The caller decides when to write:
  the worker flushes once per batch (``worker.batch_max_events`` events, or what
  ``worker.batch_within_seconds`` gathered), before it commits the batch's offsets, so the
  batch settings size and pace the inserts.
* ``flush`` writes each table's buffer as one insert and returns only once the engine has
  acknowledged every row. Rows added while a flush runs stay buffered for the next one.
* On failure nothing is dropped: the table being written keeps its buffer (tables already
  written are cleared; writing them again would be harmless anyway). A transient failure
  (store down or asking to slow down) raises :class:`pipeline.ports.SinkUnavailable` whose
  ``retry_after`` grows exponentially from ``retry_initial_seconds`` to ``retry_max_seconds``
  and resets after a success; the caller waits and calls ``flush`` again. A permanent failure
  (a statement the store rejects) raises the :class:`~sinks.errors.SinkError` itself, buffer
  still intact: retrying cannot help, so the caller should stop without committing offsets.
* Idempotent by construction: a snapshot maps to the same row every time (except
  ``updated_at``, the write time), and ``kpi_panes`` keeps the highest version per key, so
  writing a snapshot twice, or an older version after a newer, leaves ``kpi_current`` as is.

Blocking driver calls run in a worker thread (``asyncio.to_thread``), so the event loop keeps
serving while an insert or a connection attempt waits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline.ports import (
    CampaignRow,
    CreditRow,
    DeadLetterRow,
    KpiSnapshot,
    RawEventRow,
    SinkUnavailable,
    SkippedEventRow,
    WatermarkRow,
)
from pipeline.settings import ClickHouseSettings
from sinks.backends import Backend, open_backend
from sinks.errors import BackendUnavailable, SinkError
from sinks.migrate import apply_migrations
from sinks.tables import (
    CAMPAIGN_TABLE,
    CREDIT_TABLE,
    DEAD_LETTER_ORIGINAL_TABLE,
    DEAD_LETTER_TABLE,
    KPI_TABLE,
    RAW_TABLE,
    SKIPPED_TABLE,
    WATERMARK_TABLE,
    WRITTEN_COLUMNS,
    campaign_row,
    credit_row,
    dead_letter_original_row,
    dead_letter_row,
    raw_row,
    skipped_row,
    snapshot_row,
    watermark_row,
)

__all__ = ["Backoff", "ClickHouseSink", "FlushEvent", "FlushObserver"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FlushEvent:
    """What one insert attempt did: ``error`` is None on success.

    ``retry_after`` is set when the failure was transient (the delay handed to the caller).
    """

    table: str
    rows: int
    seconds: float
    error: SinkError | None = None
    retry_after: float | None = None


FlushObserver = Callable[[FlushEvent], None]
"""Called after every insert attempt (e.g. to record metrics); its exceptions are logged and
ignored so that observing can never break writing."""


class Backoff:
    """Exponential back-off: ``initial``, ``2*initial``, ... capped at ``maximum``."""

    def __init__(self, initial: float, maximum: float) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("need 0 < initial <= maximum")
        self._initial = initial
        self._maximum = maximum
        self._failures = 0

    @property
    def failures(self) -> int:
        """Consecutive failures since the last success."""
        return self._failures

    def failure(self) -> float:
        """Record a failure; return how long to wait before the next attempt."""
        self._failures += 1
        exponent = min(self._failures - 1, 62)
        return min(self._initial * 2.0**exponent, self._maximum)

    def reset(self) -> None:
        """Record a success."""
        self._failures = 0


class ClickHouseSink:
    """:class:`pipeline.ports.SnapshotSink` writing to ClickHouse or chDB (see module doc).

    ``backend`` defaults to :func:`open_backend` of ``settings.url``; tests pass a double.
    ``migrate=False`` skips applying migrations in :meth:`start` (for read-only deployments
    whose schema is managed by ``socialroi migrate``). Not thread-safe: use it from one event
    loop.
    """

    def __init__(
        self,
        settings: ClickHouseSettings,
        *,
        backend: Backend | None = None,
        observer: FlushObserver | None = None,
        migrate: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._backend = (
            backend if backend is not None else open_backend(settings.url.get_secret_value())
        )
        self._observer = observer
        self._migrate = migrate
        self._clock = clock
        self._wall_clock = wall_clock
        self._backoff = Backoff(settings.retry_initial_seconds, settings.retry_max_seconds)
        self._columns: dict[str, tuple[str, ...]] = dict(WRITTEN_COLUMNS)
        self._buffers: dict[str, list[tuple[object, ...]]] = {t: [] for t in self._columns}
        self._flush_lock = asyncio.Lock()
        self._closed = False

    @property
    def backend(self) -> Backend:
        """The backend this sink writes through (readers may share it)."""
        return self._backend

    @property
    def buffered_rows(self) -> int:
        """Rows added and not yet written, all tables together."""
        return sum(len(rows) for rows in self._buffers.values())

    def buffered(self, table: str) -> int:
        """Rows buffered for ``table``."""
        return len(self._buffers[table])

    async def start(self) -> None:
        """Connect and bring the schema up to date.

        Raises :class:`SinkUnavailable` (with a back-off delay) if the store cannot be reached;
        call again to retry. Other failures (:class:`~sinks.errors.StoreLocked`, a migration
        error) are :class:`~sinks.errors.SinkError` and will not pass by retrying.
        """
        try:
            await asyncio.to_thread(self._backend.start)
            if self._migrate:
                await asyncio.to_thread(apply_migrations, self._backend)
        except BackendUnavailable as exc:
            raise SinkUnavailable(str(exc), self._backoff.failure()) from exc
        self._backoff.reset()

    def _buffer(self, table: str, rows: list[tuple[object, ...]]) -> None:
        if self._closed:
            raise SinkError("sink is closed")
        self._buffers[table].extend(rows)

    def add_snapshots(self, rows: Sequence[KpiSnapshot]) -> None:
        """Buffer snapshots; raises :class:`~sinks.tables.RowError` (buffering none of them)
        if one cannot be stored."""
        now = int(self._wall_clock())
        self._buffer(KPI_TABLE, [snapshot_row(snapshot, now) for snapshot in rows])

    def add_dead_letters(self, rows: Sequence[DeadLetterRow]) -> None:
        """Buffer dead letters (a payload prefix in ``dead_letters``, the whole payload's
        length and SHA-256 in ``dead_letter_originals``); raises
        :class:`~sinks.tables.RowError` (buffering none of them) if one cannot be stored."""
        now = int(self._wall_clock())
        letters = [dead_letter_row(letter, now) for letter in rows]
        originals = [dead_letter_original_row(letter, now) for letter in rows]
        self._buffer(DEAD_LETTER_TABLE, letters)
        self._buffer(DEAD_LETTER_ORIGINAL_TABLE, originals)

    def add_credits(self, rows: Sequence[CreditRow]) -> None:
        """Buffer credited-conversion rows; raises :class:`~sinks.tables.RowError` (buffering
        none of them) if one cannot be stored."""
        self._buffer(CREDIT_TABLE, [credit_row(credit) for credit in rows])

    def add_raw_events(self, rows: Sequence[RawEventRow]) -> None:
        """Buffer accepted events for the raw archive (deduplicated by topic and event id)."""
        now = int(self._wall_clock())
        self._buffer(RAW_TABLE, [raw_row(event, now) for event in rows])

    def add_skipped_events(self, rows: Sequence[SkippedEventRow]) -> None:
        """Buffer late and duplicate events (one row per source position)."""
        now = int(self._wall_clock())
        self._buffer(SKIPPED_TABLE, [skipped_row(event, now) for event in rows])

    def add_campaigns(self, rows: Sequence[CampaignRow]) -> None:
        """Buffer campaign records (one row each; the views read each campaign's newest)."""
        now = int(self._wall_clock())
        self._buffer(CAMPAIGN_TABLE, [campaign_row(record, now) for record in rows])

    def add_watermarks(self, rows: Sequence[WatermarkRow]) -> None:
        """Buffer stage-two partitions' watermarks; written after the tables above."""
        now = int(self._wall_clock())
        self._buffer(WATERMARK_TABLE, [watermark_row(mark, now) for mark in rows])

    def _notify(self, event: FlushEvent) -> None:
        if self._observer is None:
            return
        try:
            self._observer(event)
        except Exception:
            logger.exception("flush observer failed (ignored)")

    async def flush(self) -> None:
        """Write every buffered row; return once all are acknowledged (see module doc).

        Raises :class:`SinkUnavailable` on a transient failure, :class:`SinkError` on a
        permanent one; in both cases the unwritten rows stay buffered.
        """
        async with self._flush_lock:
            for table, buffer in self._buffers.items():
                if buffer:
                    await self._write(table, buffer)
            self._backoff.reset()

    async def _write(self, table: str, buffer: list[tuple[object, ...]]) -> None:
        # A copy: rows added while the insert runs in its thread must not be read mid-append.
        batch = list(buffer)
        started = self._clock()
        try:
            await asyncio.to_thread(self._backend.insert, table, self._columns[table], batch)
        except BackendUnavailable as exc:
            delay = self._backoff.failure()
            self._notify(FlushEvent(table, len(batch), self._clock() - started, exc, delay))
            logger.warning(
                "insert of %d rows into %s failed, retry in %.1fs: %s",
                len(batch),
                table,
                delay,
                exc,
            )
            raise SinkUnavailable(f"{table}: {exc}", delay) from exc
        except SinkError as exc:
            self._notify(FlushEvent(table, len(batch), self._clock() - started, exc))
            raise
        del buffer[: len(batch)]
        elapsed = self._clock() - started
        self._notify(FlushEvent(table, len(batch), elapsed))
        logger.debug("inserted %d rows into %s in %.3fs", len(batch), table, elapsed)

    async def close(self) -> None:
        """Try one last flush of buffered rows, then release the connection. Idempotent.

        Does not raise when that last flush fails: the rows' source offsets were not committed
        (the caller commits only after ``flush`` returns), so they are replayed on restart; the
        loss of the buffer is logged with its row count.
        """
        if self._closed:
            return
        if self.buffered_rows:
            pending = self.buffered_rows
            try:
                await self.flush()
            except (SinkUnavailable, SinkError) as exc:
                logger.warning(
                    "closing with %d unwritten rows (to be replayed from Kafka): %s", pending, exc
                )
        self._closed = True
        await asyncio.to_thread(self._backend.close)
