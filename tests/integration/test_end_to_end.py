"""Simulator -> real Kafka -> Faust worker -> ClickHouse (server 18.16 and chDB) -> verify."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from subprocess import CompletedProcess

import orjson
import pytest

from pipeline.kpi import KPI_COUNTERS
from sinks import open_backend

pytestmark = pytest.mark.integration

Run = Callable[..., CompletedProcess[str]]


def _ok(result: CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_simulated_run_equals_the_truth_and_verify_catches_an_altered_row(
    socialroi: Run, pipeline_env: dict[str, str], engine_url: str, tmp_path: Path
) -> None:
    rates = tmp_path / "rates.csv"
    rates.write_text("currency,rate\nUSD,0.92\nGBP,1.17\n")
    env = {
        **pipeline_env,
        "SOCIALROI_CLICKHOUSE__URL": engine_url,
        "SOCIALROI_COSTS__RATES_FILE": str(rates),
    }
    truth = tmp_path / "truth.json"
    out = _ok(socialroi(env, "simulate", "--events", "20000", "--seed", "7", "--truth", str(truth)))
    assert "sent 20000 messages" in out
    _ok(socialroi(env, "worker", "--stop-when-idle", "5"))
    out = _ok(socialroi(env, "verify", "--truth", str(truth)))
    expected = orjson.loads(truth.read_bytes())
    assert f"equals the truth: {len(expected['windows'])} windows" in out
    assert expected["late"] > 0 and expected["duplicates"] > 0
    assert f"{expected['late']} late and {expected['duplicates']} duplicate events" in out
    assert sum(expected["dead_letters"].values()) == 200
    assert set(expected["config"]["currencies"]) == {"EUR", "GBP", "USD"}

    # The campaign records' cases reached ClickHouse and verify checked them: every
    # campaign under its declared id, tagged visits under their campaign, default margins.
    declared = {c["campaign_id"] for c in expected["campaigns"].values()}
    assert any(c != c.lower() for c in declared)
    assert any(
        c["utm_campaign"] != key for key, c in expected["campaigns"].items()
    )  # tags that are not ids
    assert {w[0] for w in expected["windows"]} <= declared | {""}
    counters = expected["counters"]
    unmargined = sum(w[6][counters.index("unmargined_revenue_micros")] for w in expected["windows"])
    assert unmargined > 0
    assert f"{len(declared)} declared campaigns" in out
    # A campaign declared with capitals (its events spell it in any case) has its clicks,
    # costs, visits and credited revenue under that one id, which verify found stored.
    capital = next(c for c in sorted(declared) if c != c.lower())
    mine = [w[6] for w in expected["windows"] if w[0] == capital and w[3] == 86400]
    for name in ("clicks", "media_spend_micros", "visits", "revenue_micros"):
        assert sum(c[counters.index(name)] for c in mine) > 0, name
    assert not any(w[0] == capital.lower() for w in expected["windows"])

    # Alter one stored pane: a newer version with one more like.
    backend = open_backend(engine_url)
    backend.start()
    try:
        archived = backend.query(
            "SELECT count() FROM (SELECT DISTINCT topic, event_id FROM raw_events)"
        ).rows[0][0]
        rejected = sum(expected["dead_letters"].values())
        assert archived == expected["sent"] - rejected - expected["late"] - expected["duplicates"]
        # a pane row as the worker wrote it (its campaign key), not a declared campaign's
        # row, which sums its keys and applies its margin
        row = backend.query(
            "SELECT *, toUInt64(toUnixTimestamp(window_start)) * 1000 AS window_start_ms, "
            "toUInt64(toUnixTimestamp(window_end)) * 1000 AS window_end_ms, "
            "latest_version AS version FROM kpi_pane_latest "
            "WHERE window_kind = 'tumbling' AND window_seconds = 60 AND likes > 0 "
            "ORDER BY campaign_id, channel, window_start LIMIT 1"
        ).dicts()[0]
        counters = {name: row[name] for name in KPI_COUNTERS}
        counters["likes"] += 1

        def utc(ms: int) -> datetime:
            return datetime.fromtimestamp(ms / 1000, UTC)

        backend.insert(
            "kpi_panes",
            [
                "campaign_id",
                "channel",
                "window_kind",
                "window_seconds",
                "window_start",
                "window_end",
                "is_final",
                "version",
                *counters,
            ],
            [
                [
                    row["campaign_id"],
                    row["channel"],
                    "tumbling",
                    60,
                    utc(row["window_start_ms"]),
                    utc(row["window_end_ms"]),
                    int(row["is_final"]),
                    row["version"] + 2,
                    *counters.values(),
                ]
            ],
        )
        # And one duplicate more than the stream had: a position no event came from.
        skipped = backend.query(
            "SELECT topic, partition, event_id, event_type, campaign_id, channel, "
            "toUInt64(toUnixTimestamp(event_time)) * 1000 AS event_ms FROM skipped_events "
            "WHERE reason = 'duplicate' ORDER BY topic, partition, offset LIMIT 1"
        ).dicts()[0]
        moved = {**skipped, "reason": "duplicate", "offset": 10**9}
        moved["event_time"] = utc(moved.pop("event_ms"))
        backend.insert("skipped_events", list(moved), [list(moved.values())])
    finally:
        backend.close()
    result = socialroi(env, "verify", "--truth", str(truth))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "2 differences" in result.stdout
    assert f"likes expected {row['likes']}, got {row['likes'] + 1}" in result.stdout
    day = utc(skipped["event_ms"]).date().isoformat()
    assert f"{skipped['channel']} {day}: duplicate expected " in result.stdout


def test_the_main_job_runs_the_whole_pipeline_and_prints_kpis(
    socialroi: Run, pipeline_env: dict[str, str], tmp_path: Path
) -> None:
    """`socialroi demo`, what the README's first command runs: the whole pipeline on the
    embedded default, checked against its own truth, then the KPI table and the report."""
    out = _ok(socialroi(pipeline_env, "demo", "--events", "2000", "--seed", "3"))
    assert "verify: ClickHouse equals the truth" in out, out[-3000:]
    assert "KPIs per campaign" in out, out[-3000:]
    reports = list((tmp_path / ".local" / "demo").glob("*/report.html"))
    assert len(reports) == 1 and reports[0].stat().st_size > 10_000, reports
