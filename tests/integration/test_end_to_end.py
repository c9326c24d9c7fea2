"""Simulator -> real Kafka -> Faust worker -> ClickHouse (server 18.16 and chDB) -> verify."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from subprocess import CompletedProcess

import orjson
import pytest

from pipeline.kpi import KPI_COUNTERS
from sinks import kpi_rows, open_backend

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
    assert sum(expected["dead_letters"].values()) == 200
    assert set(expected["config"]["currencies"]) == {"EUR", "GBP", "USD"}

    # Alter one stored window: a newer version with one more like.
    backend = open_backend(engine_url)
    backend.start()
    try:
        archived = backend.query(
            "SELECT count() FROM (SELECT DISTINCT topic, event_id FROM raw_events)"
        ).rows[0][0]
        rejected = sum(expected["dead_letters"].values())
        assert archived == expected["sent"] - rejected - expected["late"] - expected["duplicates"]
        row = next(
            r
            for r in kpi_rows(backend, window_seconds=60, window_kind="tumbling")
            if r["likes"] > 0
        )
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
    finally:
        backend.close()
    result = socialroi(env, "verify", "--truth", str(truth))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 differences" in result.stdout
    assert f"likes expected {row['likes']}, got {row['likes'] + 1}" in result.stdout
