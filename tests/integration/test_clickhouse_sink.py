"""The sink against real engines: ClickHouse 18.16 (the oldest supported) and chDB (current).

Each test runs on both engines with an empty store of its own. The server must be running
(``bash deploy/local/clickhouse.sh start``); a test that cannot reach it fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import SecretStr

from pipeline.kpi import KPI_COUNTERS
from pipeline.ports import DeadLetterRow, KpiSnapshot, SinkUnavailable
from pipeline.settings import ClickHouseSettings
from sinks.backends import Backend, open_backend
from sinks.errors import BackendUnavailable, QueryError, StoreLocked
from sinks.migrate import apply_migrations, load_migrations
from sinks.reader import StoredDeadLetter, dead_letter_counts, dead_letters, kpi_rows
from sinks.views import VIEW_READERS
from sinks.writer import ClickHouseSink

if TYPE_CHECKING:
    from tests.integration.conftest_clickhouse import PrivateClickHouse

# Fixtures (engine_url, engine_backend, private_clickhouse, ...) come from
# conftest_clickhouse.py through tests/integration/conftest.py.
pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000
BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def settings(url: str) -> ClickHouseSettings:
    return ClickHouseSettings(url=SecretStr(url), retry_initial_seconds=0.5, retry_max_seconds=8.0)


def snapshot(
    version: int,
    *,
    campaign: str = "spring",
    channel: str = "instagram",
    start_ms: int = BASE_MS,
    kind: str = "tumbling",
    seconds: int = 3600,
    final: bool = False,
    hopping: tuple[int, ...] = (),
) -> KpiSnapshot:
    counters = {name: version * 1000 + i for i, name in enumerate(KPI_COUNTERS)}
    counters["revenue_micros"] = version * 2**40  # beyond 32 bits
    return KpiSnapshot(
        campaign_id=campaign,
        channel=channel,
        window_kind=kind,
        window_seconds=seconds,
        window_start_ms=start_ms,
        window_end_ms=start_ms + seconds * 1000,
        is_final=final,
        version=version,
        counters=counters,
        hopping_seconds=hopping,
    )


async def write(sink: ClickHouseSink, *batches: list[KpiSnapshot]) -> None:
    for batch in batches:
        sink.add_snapshots(batch)
        await sink.flush()


def tables(backend: Backend) -> set[str]:
    result = backend.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
    return {str(name) for (name,) in result.rows}


def test_migrations_apply_twice_without_harm(engine_backend: Backend) -> None:
    first = apply_migrations(engine_backend)
    # Every migration but the access-control one: neither 18.16 nor chDB manages SQL users.
    ungated = [m.version for m in load_migrations() if not m.capabilities]
    assert [m.version for m in first] == ungated
    assert apply_migrations(engine_backend) == []
    expected = {"schema_migrations", "kpi_windows", "kpi_current", "dead_letters"}
    expected |= {"credited_conversions", "raw_events", "kpi_panes", "kpi_watermarks"}
    expected |= {"kpi_pane_current", "kpi_pane_latest", "kpi_key_current", "campaigns"}
    expected |= {"campaign_keys"}
    expected |= {"dead_letter_originals", "skipped_events"}
    expected |= set(VIEW_READERS)
    if engine_backend.cluster:  # each table is Distributed over a replicated local one
        engines = dict(
            engine_backend.query(
                "SELECT name, engine FROM system.tables WHERE database = currentDatabase()"
            ).rows
        )
        stored = {"schema_migrations", "kpi_windows", "dead_letters"}
        stored |= {"credited_conversions", "raw_events", "kpi_panes", "kpi_watermarks"}
        stored |= {"campaigns", "dead_letter_originals", "skipped_events"}
        for name in stored:
            assert engines[name] == "Distributed", name
            assert engines[f"{name}_local"].startswith("Replicated"), name
        expected |= {f"{name}_local" for name in stored}
    assert tables(engine_backend) == expected
    recorded = engine_backend.query(
        "SELECT version, count() FROM schema_migrations GROUP BY version"
    )
    assert sorted(v for v, _ in recorded.rows) == [m.version for m in first]


def test_workers_starting_at_once_migrate_safely(engine_url: str) -> None:
    backends = [open_backend(engine_url) for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(backends))

    def run(backend: Backend) -> None:
        try:
            backend.start()
            barrier.wait(30)
            apply_migrations(backend)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for b in backends]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors == []
        assert apply_migrations(backends[0]) == []
        assert "kpi_current" in tables(backends[0])
    finally:
        for backend in backends:
            backend.close()


def test_kpi_current_holds_the_newest_version(engine_url: str) -> None:
    async def scenario() -> list[dict[str, Any]]:
        sink = ClickHouseSink(settings(engine_url))
        await sink.start()
        try:
            await write(
                sink,
                [snapshot(1)],
                [snapshot(3, final=True)],
                [snapshot(3, final=True)],  # the same snapshot again
                [snapshot(2)],  # an older version after the newer one
                [snapshot(2), snapshot(1)],  # and both old ones again, in one batch
            )
            raw = sink.backend.query("SELECT count() FROM kpi_panes").rows[0][0]
            assert raw >= 2  # collapsing happens when reading, whatever merges have done
            return kpi_rows(sink.backend)
        finally:
            await sink.close()

    before = int(time.time()) * 1000
    (row,) = asyncio.run(scenario())
    after = int(time.time()) * 1000
    newest = snapshot(3, final=True)
    assert row["version"] == 3 and row["is_final"] is True
    assert {name: row[name] for name in KPI_COUNTERS} == dict(newest.counters)
    assert (row["window_start_ms"], row["window_end_ms"]) == (BASE_MS, BASE_MS + HOUR_MS)
    assert before <= row["updated_at_ms"] <= after


KEY = ("campaign_id", "channel", "window_kind", "window_seconds", "window_start_ms")


def test_reader_filters_and_orders(engine_url: str) -> None:
    rows_in = [
        snapshot(1, campaign="b", channel="tiktok"),
        snapshot(1, campaign="a", channel="tiktok"),
        snapshot(1, campaign="a", channel="facebook"),
        snapshot(2, campaign="a", channel="facebook", start_ms=BASE_MS + HOUR_MS),
        # a pane no tumbling window reads, of which two-day hopping windows are composed
        snapshot(1, campaign="a", kind="pane", seconds=86400, hopping=(2 * 86400,)),
        snapshot(1, campaign="a", seconds=60, start_ms=BASE_MS + 60_000),
    ]

    async def scenario() -> dict[str, list[tuple[object, ...]]]:
        sink = ClickHouseSink(settings(engine_url))
        await sink.start()
        try:
            await write(sink, rows_in)
            backend = sink.backend

            def keys(**filters: object) -> list[tuple[object, ...]]:
                return [
                    tuple(r[k] for k in KEY)
                    for r in kpi_rows(backend, **filters)  # type: ignore[arg-type]
                ]

            return {
                "all": keys(),
                "hourly": keys(window_seconds=3600),
                "hopping": keys(window_kind="hopping"),
                "b": keys(campaign="b"),
                "quote": keys(campaign="it's"),
            }
        finally:
            await sink.close()

    got = asyncio.run(scenario())
    assert got["all"] == [
        ("a", "facebook", "tumbling", 3600, BASE_MS),
        ("a", "facebook", "tumbling", 3600, BASE_MS + HOUR_MS),
        ("a", "instagram", "hopping", 2 * 86400, BASE_MS - 86_400_000),
        ("a", "instagram", "hopping", 2 * 86400, BASE_MS),
        ("a", "instagram", "tumbling", 60, BASE_MS + 60_000),
        ("a", "tiktok", "tumbling", 3600, BASE_MS),
        ("b", "tiktok", "tumbling", 3600, BASE_MS),
    ]
    assert len(got["hourly"]) == 4
    assert got["hopping"] == [
        ("a", "instagram", "hopping", 2 * 86400, BASE_MS - 86_400_000),
        ("a", "instagram", "hopping", 2 * 86400, BASE_MS),
    ]
    assert got["b"] == [("b", "tiktok", "tumbling", 3600, BASE_MS)]
    assert got["quote"] == []


def test_dead_letters_keep_their_bytes(engine_url: str) -> None:
    every_byte = bytes(range(256))
    big = every_byte * 400 + b"tail"  # 102,404 bytes: the table keeps the first 65,536
    letters = [
        DeadLetterRow("invalid_json", "Expecting value", "social.interactions", 0, 5, 0, b"\xff{"),
        DeadLetterRow("schema", "missing 'campaign_id'", "web.events", 2, 2**33, -1, every_byte),
        DeadLetterRow("oversize", "102404 bytes", "web.events", 1, 9, BASE_MS + 1, big),
        DeadLetterRow("empty", "", "web.events", 1, 10, BASE_MS + 1, b""),
        DeadLetterRow("schema", "d\u00e9j\u00e0 vu \\ 'quoted'", "web.events", 2, 7, 1, b"\x00"),
    ]

    async def scenario() -> tuple[list[StoredDeadLetter], dict[str, int]]:
        sink = ClickHouseSink(settings(engine_url))
        await sink.start()
        try:
            sink.add_dead_letters(letters)
            await sink.flush()
            sink.add_dead_letters(letters[:2])  # re-written after a crash: same rows
            await sink.flush()
            return dead_letters(sink.backend), dead_letter_counts(sink.backend)
        finally:
            await sink.close()

    stored, counts = asyncio.run(scenario())
    assert counts == {"empty": 1, "invalid_json": 1, "oversize": 1, "schema": 2}
    by_position = {(d.topic, d.partition, d.offset): d for d in stored}
    assert len(stored) == 5
    for letter in letters:
        got = by_position[(letter.topic, letter.partition, letter.offset)]
        assert got.payload == letter.payload[:65536]
        assert got.payload_bytes == len(letter.payload)
        assert got.payload_sha256 == hashlib.sha256(letter.payload).hexdigest()
        assert got.complete == (letter.payload is not big)
        assert (got.reason, got.detail) == (letter.reason, letter.detail)
        expected_ts = max(letter.kafka_ts_ms, 0) // 1000 * 1000
        assert got.kafka_ts_ms == expected_ts


def test_dead_letters_written_before_0009_survive_the_upgrade(
    engine_backend: Backend, tmp_path: Path
) -> None:
    """A store at migration 0008 holds a dead letter; after 0009 it reads back unchanged,
    its length and digest those of the payload it kept."""
    older = tmp_path / "migrations-0008"
    older.mkdir()
    for migration in load_migrations():
        if migration.version <= 8:
            (older / migration.path.name).write_bytes(migration.path.read_bytes())
    apply_migrations(engine_backend, older)
    kept = b'{"big": "' + b"x" * 100
    engine_backend.insert(
        "dead_letters",
        ("received_at", "reason", "detail", "topic", "partition", "offset", "kafka_ts", "payload"),
        [(1_790_000_000, "oversize", "70000 bytes", "web.events", 1, 9, 1_790_000_000, kept)],
    )
    assert [m.version for m in apply_migrations(engine_backend)][:1] == [9]
    (got,) = dead_letters(engine_backend)
    assert (got.reason, got.topic, got.offset, got.payload) == ("oversize", "web.events", 9, kept)
    assert (got.payload_bytes, got.payload_sha256) == (len(kept), hashlib.sha256(kept).hexdigest())


def test_ten_thousand_snapshots_in_one_flush(engine_url: str) -> None:
    batch = [
        snapshot(7, campaign=f"c{i % 100:03d}", start_ms=BASE_MS + (i // 100) * HOUR_MS)
        for i in range(10_000)
    ]

    async def scenario() -> tuple[int, int]:
        sink = ClickHouseSink(settings(engine_url))
        await sink.start()
        try:
            sink.add_snapshots(batch)
            await sink.flush()
            result = sink.backend.query("SELECT count(), sum(clicks) FROM kpi_current")
            count, clicks = result.rows[0]
            return int(count), int(clicks)
        finally:
            await sink.close()

    assert asyncio.run(scenario()) == (10_000, sum(s.counters["clicks"] for s in batch))


def test_engine_types_come_back_the_same(engine_backend: Backend) -> None:
    result = engine_backend.query(
        "SELECT toUInt64(18446744073709551615) AS big, toInt64(-1) AS neg, "
        "toDateTime(1767225600, 'UTC') AS utc, toDateTime(1767225600) AS plain, "
        "unhex('FF00') AS raw, 'h\u00e9' AS text, toNullable(toInt32(3)) AS maybe"
    )
    (row,) = result.dicts()
    assert row["big"] == 2**64 - 1 and row["neg"] == -1
    assert row["utc"] == row["plain"]
    assert row["utc"].isoformat() == "2026-01-01T00:00:00+00:00"
    assert (row["raw"], row["text"], row["maybe"]) == (b"\xff\x00", "h\u00e9", 3)


def test_a_bad_statement_is_a_query_error(engine_backend: Backend) -> None:
    with pytest.raises(QueryError) as failure:
        engine_backend.query("SELECT * FROM no_such_table")
    assert failure.value.code == 60


# --- server only ----------------------------------------------------------------------------


def test_passwords_never_show_in_errors(clickhouse_server_url: str) -> None:
    wrong = clickhouse_server_url.replace("://default@", "://default:Pa55word-x@")
    with pytest.raises(QueryError) as failure:
        open_backend(wrong).start()
    assert "Pa55word-x" not in str(failure.value)
    with pytest.raises(BackendUnavailable) as down:
        open_backend("clickhouse://u:Pa55word-x@127.0.0.1:1/db").start()
    assert "Pa55word-x" not in str(down.value)


def test_outage_keeps_rows_and_recovers(private_clickhouse: PrivateClickHouse) -> None:
    async def scenario() -> list[dict[str, object]]:
        sink = ClickHouseSink(settings(private_clickhouse.url))
        await sink.start()
        try:
            await write(sink, [snapshot(1, campaign="before")])
            private_clickhouse.kill()
            sink.add_snapshots([snapshot(1, campaign="during"), snapshot(2, campaign="before")])
            delays = []
            for _ in range(3):
                with pytest.raises(SinkUnavailable) as failure:
                    await sink.flush()
                delays.append(failure.value.retry_after)
                assert sink.buffered_rows == 2
            assert delays == [0.5, 1.0, 2.0]
            private_clickhouse.start()
            await sink.flush()
            assert sink.buffered_rows == 0
            return kpi_rows(sink.backend)
        finally:
            await sink.close()

    rows = asyncio.run(scenario())
    assert [(r["campaign_id"], r["version"]) for r in rows] == [("before", 2), ("during", 1)]


def test_start_while_the_server_is_down_asks_to_retry(
    stopped_private_clickhouse: PrivateClickHouse,
) -> None:
    server = stopped_private_clickhouse

    async def scenario() -> None:
        sink = ClickHouseSink(settings(server.url))
        with pytest.raises(SinkUnavailable):
            await sink.start()
        server.start()
        try:
            await sink.start()
            await write(sink, [snapshot(1)])
            assert len(kpi_rows(sink.backend)) == 1
        finally:
            await sink.close()

    asyncio.run(scenario())


# --- chDB only ------------------------------------------------------------------------------

HOLDER = """
import sys
from sinks.backends import open_backend
from sinks.migrate import apply_migrations
backend = open_backend(sys.argv[1])
backend.start()
apply_migrations(backend)
print("holding", flush=True)
sys.stdin.read()
backend.close()
"""


def test_chdb_store_is_one_process_at_a_time(tmp_path: Path) -> None:
    url = f"chdb://{tmp_path / 'store'}"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"holding\n"
        backend = open_backend(url)
        with pytest.raises(StoreLocked, match=f"PID {holder.pid}"):
            backend.start()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)
    backend.start()  # the holder is gone: the store opens, with the holder's schema intact
    try:
        assert apply_migrations(backend) == []
    finally:
        backend.close()


def test_chdb_one_store_per_process(tmp_path: Path) -> None:
    first = open_backend(f"chdb://{tmp_path / 'one'}")
    first.start()
    second_same = open_backend(f"chdb://{tmp_path / 'one'}")
    second_same.start()  # a second session on the same store is fine
    try:
        with pytest.raises(StoreLocked, match="one store directory per process"):
            open_backend(f"chdb://{tmp_path / 'two'}").start()
    finally:
        second_same.close()
        first.close()
    other = open_backend(f"chdb://{tmp_path / 'two'}")
    other.start()  # once the first store is closed, another may be opened
    other.close()
