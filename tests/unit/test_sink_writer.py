"""The writer's buffering, flush and back-off rules, against the in-memory backend."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import pytest
from pydantic import SecretStr

from pipeline.ports import DeadLetterRow, KpiSnapshot, SinkUnavailable
from pipeline.settings import ClickHouseSettings
from sinks.errors import BackendUnavailable, QueryError, SinkError
from sinks.memory import MemoryBackend
from sinks.tables import DEAD_LETTER_ORIGINAL_TABLE, DEAD_LETTER_TABLE, KPI_TABLE, RowError
from sinks.writer import Backoff, ClickHouseSink, FlushEvent

SETTINGS = ClickHouseSettings(
    url=SecretStr("clickhouse://ingest:topsecret@127.0.0.1:1/db"),
    retry_initial_seconds=0.5,
    retry_max_seconds=4.0,
)


def snapshot(version: int = 1, campaign: str = "c1", start_s: int = 0) -> KpiSnapshot:
    return KpiSnapshot(
        campaign_id=campaign,
        channel="facebook",
        window_kind="tumbling",
        window_seconds=60,
        window_start_ms=start_s * 1000,
        window_end_ms=(start_s + 60) * 1000,
        is_final=False,
        version=version,
        counters={"clicks": version},
    )


LETTER = DeadLetterRow("invalid_json", "bad", "web.events", 0, 7, 1_000, b"\xff")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_sink(
    backend: MemoryBackend | None = None, observer: list[FlushEvent] | None = None
) -> tuple[ClickHouseSink, MemoryBackend, FakeClock]:
    backend = backend or MemoryBackend()
    clock = FakeClock()
    sink = ClickHouseSink(
        SETTINGS,
        backend=backend,
        observer=observer.append if observer is not None else None,
        clock=clock,
        wall_clock=lambda: 1_700_000_000.5,
    )
    return sink, backend, clock


async def started(sink: ClickHouseSink) -> ClickHouseSink:
    await sink.start()
    return sink


def test_constructor_does_no_io() -> None:
    sink = ClickHouseSink(SETTINGS)  # port 1: any connection attempt would fail
    assert sink.buffered_rows == 0
    assert "topsecret" not in sink.backend.display_url


def test_start_connects_and_migrates() -> None:
    sink, backend, _ = make_sink()
    asyncio.run(sink.start())
    assert backend.started
    assert any("kpi_windows" in sql for sql in backend.executed)
    assert {row["name"] for row in backend.tables["schema_migrations"]} >= {"kpi_windows"}


def test_start_against_an_unreachable_store_asks_to_retry() -> None:
    sink, backend, _ = make_sink()
    backend.fail_next(BackendUnavailable("refused"), times=2)
    delays = []
    for _ in range(2):
        with pytest.raises(SinkUnavailable) as failure:
            asyncio.run(sink.start())
        delays.append(failure.value.retry_after)
    assert delays == [0.5, 1.0]
    asyncio.run(sink.start())
    assert backend.started


def test_flush_writes_each_table_as_one_insert() -> None:
    async def scenario() -> tuple[MemoryBackend, ClickHouseSink]:
        sink, backend, _ = make_sink()
        await sink.start()
        sink.add_snapshots([snapshot(1, "a"), snapshot(1, "b")])
        sink.add_snapshots([snapshot(2, "a")])
        sink.add_dead_letters([LETTER])
        await sink.flush()
        return backend, sink

    backend, sink = asyncio.run(scenario())
    assert backend.insert_calls[-3:] == [
        (KPI_TABLE, 3),
        (DEAD_LETTER_TABLE, 1),
        (DEAD_LETTER_ORIGINAL_TABLE, 1),
    ]
    rows = backend.tables[KPI_TABLE]
    assert [(r["campaign_id"], r["version"], r["clicks"]) for r in rows] == [
        ("a", 1, 1),
        ("b", 1, 1),
        ("a", 2, 2),
    ]
    assert rows[0]["updated_at"] == 1_700_000_000
    assert backend.tables[DEAD_LETTER_TABLE][0]["payload"] == b"\xff"
    original = backend.tables[DEAD_LETTER_ORIGINAL_TABLE][0]
    assert (original["payload_bytes"], original["payload_sha256"][:8]) == (1, "a8100ae6")
    assert sink.buffered_rows == 0


def test_flush_with_nothing_buffered_inserts_nothing() -> None:
    sink, backend, _ = make_sink()
    asyncio.run(started(sink))
    before = list(backend.insert_calls)  # the migrations' records
    asyncio.run(sink.flush())
    assert backend.insert_calls == before


def test_a_transient_failure_keeps_the_buffer_and_backs_off() -> None:
    events: list[FlushEvent] = []

    async def scenario() -> list[float]:
        sink, backend, _ = make_sink(observer=events)
        await sink.start()
        sink.add_snapshots([snapshot(1), snapshot(2)])
        backend.fail_next(BackendUnavailable("server down"), times=5)
        delays = []
        for _ in range(5):
            with pytest.raises(SinkUnavailable) as failure:
                await sink.flush()
            delays.append(failure.value.retry_after)
            assert sink.buffered(KPI_TABLE) == 2
        await sink.flush()
        assert sink.buffered_rows == 0
        assert [r["version"] for r in backend.tables[KPI_TABLE]] == [1, 2]
        sink.add_snapshots([snapshot(3)])
        backend.fail_next(BackendUnavailable("down again"))
        with pytest.raises(SinkUnavailable) as failure:
            await sink.flush()
        delays.append(failure.value.retry_after)
        return delays

    assert asyncio.run(scenario()) == [0.5, 1.0, 2.0, 4.0, 4.0, 0.5]
    failures = [e for e in events if e.error is not None]
    assert [e.retry_after for e in failures] == [0.5, 1.0, 2.0, 4.0, 4.0, 0.5]
    successes = [e for e in events if e.error is None and e.table == KPI_TABLE]
    assert [e.rows for e in successes] == [2]


def test_a_permanent_failure_raises_itself_and_keeps_the_buffer() -> None:
    async def scenario() -> None:
        sink, backend, _ = make_sink()
        await sink.start()
        sink.add_snapshots([snapshot(1)])
        backend.fail_next(QueryError("no such column", 16))
        with pytest.raises(QueryError):
            await sink.flush()
        assert sink.buffered_rows == 1
        await sink.flush()
        assert sink.buffered_rows == 0

    asyncio.run(scenario())


def test_only_the_failed_table_stays_buffered() -> None:
    async def scenario() -> MemoryBackend:
        sink, backend, _ = make_sink()
        await sink.start()
        sink.add_snapshots([snapshot(1)])
        sink.add_dead_letters([LETTER])
        original = backend.insert

        def insert(table: str, columns: object, rows: object) -> int:
            if table == DEAD_LETTER_TABLE:
                raise BackendUnavailable("dead letters table unavailable")
            return original(table, columns, rows)  # type: ignore[arg-type]

        backend.insert = insert  # type: ignore[method-assign]
        with pytest.raises(SinkUnavailable):
            await sink.flush()
        assert (sink.buffered(KPI_TABLE), sink.buffered(DEAD_LETTER_TABLE)) == (0, 1)
        backend.insert = original  # type: ignore[method-assign]
        await sink.flush()
        return backend

    backend = asyncio.run(scenario())
    assert len(backend.tables[KPI_TABLE]) == 1  # not written twice
    assert len(backend.tables[DEAD_LETTER_TABLE]) == 1


def test_rows_added_during_a_flush_wait_for_the_next_one() -> None:
    """The insert runs in a thread: the loop keeps adding rows, none is lost or doubled."""
    entered, release = threading.Event(), threading.Event()

    async def scenario() -> tuple[MemoryBackend, int]:
        sink, backend, _ = make_sink()
        await sink.start()

        def block(table: str, rows: int) -> None:
            entered.set()
            assert release.wait(5)

        backend.before_insert = block
        sink.add_snapshots([snapshot(1)])
        flushing = asyncio.create_task(sink.flush())
        assert await asyncio.to_thread(entered.wait, 5)
        sink.add_snapshots([snapshot(2)])  # the event loop is free while the insert waits
        release.set()
        await flushing
        left = sink.buffered_rows
        backend.before_insert = None
        await sink.flush()
        return backend, left

    backend, left = asyncio.run(scenario())
    assert left == 1
    assert [r["version"] for r in backend.tables[KPI_TABLE]] == [1, 2]


def test_an_unstorable_row_is_refused_and_nothing_is_buffered() -> None:
    sink, _, _ = make_sink()
    bad = dataclasses.replace(snapshot(2), counters={"nonsense": 1})
    with pytest.raises(RowError, match="nonsense"):
        sink.add_snapshots([snapshot(1), bad])
    assert sink.buffered_rows == 0


def test_a_broken_observer_does_not_break_writing() -> None:
    def observer(event: FlushEvent) -> None:
        raise RuntimeError("metrics are broken")

    async def scenario() -> MemoryBackend:
        backend = MemoryBackend()
        sink = ClickHouseSink(SETTINGS, backend=backend, observer=observer)
        await sink.start()
        sink.add_snapshots([snapshot(1)])
        await sink.flush()
        return backend

    assert len(asyncio.run(scenario()).tables[KPI_TABLE]) == 1


def test_close_flushes_what_is_left_and_closes_the_backend() -> None:
    async def scenario() -> tuple[MemoryBackend, ClickHouseSink]:
        sink, backend, _ = make_sink()
        await sink.start()
        sink.add_snapshots([snapshot(1)])
        await sink.close()
        await sink.close()  # idempotent
        return backend, sink

    backend, sink = asyncio.run(scenario())
    assert len(backend.tables[KPI_TABLE]) == 1 and backend.closed
    with pytest.raises(SinkError, match="closed"):
        sink.add_snapshots([snapshot(2)])


def test_close_when_the_store_is_down_does_not_raise() -> None:
    async def scenario() -> MemoryBackend:
        sink, backend, _ = make_sink()
        await sink.start()
        sink.add_snapshots([snapshot(1)])
        backend.fail_next(BackendUnavailable("down"))
        await sink.close()
        return backend

    backend = asyncio.run(scenario())
    assert backend.closed and KPI_TABLE not in backend.tables


def test_backoff_sequence_and_reset() -> None:
    backoff = Backoff(0.25, 1.0)
    assert [backoff.failure() for _ in range(5)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    assert backoff.failures == 5
    backoff.reset()
    assert backoff.failure() == 0.25
    for _ in range(200):  # no overflow after a very long outage
        backoff.failure()
    assert backoff.failure() == 1.0
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)
