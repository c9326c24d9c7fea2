"""``socialroi report`` through the real CLI (a subprocess) on chDB and on the 18.16 server.

The store holds the snapshot set of views_data.py; the JSON, the CSV and the reader
(:func:`sinks.views.campaign_report`) must give the same numbers, equal to the ones
views_data.py computes in Python; the terminal table shows every campaign; bad flags exit 2
with a clear message.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from pipeline.settings import ClickHouseSettings
from sinks.backends import open_backend
from sinks.views import REPORT_COLUMNS, campaign_report
from sinks.writer import ClickHouseSink
from tests.integration import views_data as data

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INT_COLUMNS = {
    "windows", "impressions", "engagements", "clicks", "visits", "follows", "unfollows",
    "net_follower_growth", "service_resolved",
}  # fmt: skip


def load(url: str) -> None:
    async def write() -> None:
        sink = ClickHouseSink(ClickHouseSettings(url=SecretStr(url)))
        await sink.start()
        sink.add_snapshots(data.build_snapshots())
        sink.add_campaigns(data.CAMPAIGN_RECORDS)
        await sink.flush()
        await sink.close()  # releases the chDB store for the subprocess

    asyncio.run(write())


def report(url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCIALROI_")}
    env.update({"SOCIALROI_CLICKHOUSE__URL": url, "PYTHONPATH": str(ROOT)})
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "report", *args],
        env=env,
        cwd=cwd,
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )


def from_csv(text: str) -> list[dict[str, Any]]:
    rows = []
    for record in csv.DictReader(io.StringIO(text)):
        row: dict[str, Any] = {}
        for name, cell in record.items():
            if name in ("campaign_id", "campaign_name"):
                row[name] = cell
            elif cell == "":
                row[name] = None
            elif name in INT_COLUMNS:
                row[name] = int(cell)
            else:
                row[name] = float(cell)
        rows.append(row)
    return rows


def test_report_json_csv_and_table_agree_with_the_views(engine_url: str, tmp_path: Path) -> None:
    load(engine_url)
    period = ("--from", "2026-10-01", "--to", "2026-10-03")  # --to is inclusive
    out = report(engine_url, tmp_path, *period, "--format", "json")
    assert out.returncode == 0, out.stderr
    as_json = orjson.loads(out.stdout)
    csv_file = tmp_path / "report.csv"
    out = report(engine_url, tmp_path, *period, "--format", "csv", "--output", str(csv_file))
    assert out.returncode == 0 and out.stdout == "", out.stderr
    text = csv_file.read_text()
    assert text.splitlines()[0] == ",".join(REPORT_COLUMNS)
    as_csv = from_csv(text)

    current = data.latest(data.build_snapshots())
    expected = data.expected_report(current, date(2026, 10, 1), date(2026, 10, 4))
    assert as_json == expected
    assert as_csv == expected
    backend = open_backend(engine_url)
    backend.start()
    try:
        assert campaign_report(backend, date(2026, 10, 1), date(2026, 10, 4)) == expected
    finally:
        backend.close()

    out = report(engine_url, tmp_path, *period)
    assert out.returncode == 0, out.stderr
    for campaign in ("spring", "summer", "autumn", "tiny", "free", "(none)"):
        assert campaign in out.stdout
    assert "Campaign ROI, 2026-10-01 to 2026-10-03" in out.stdout

    # Filters and sorting, through the CLI.
    out = report(
        engine_url, tmp_path, "--campaign", "spring", "--campaign", "tiny",
        "--sort", "spend", "--desc", "--format", "json", "--window", "86400",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    everything = data.expected_report(current, date(2026, 10, 1), date(2026, 10, 4))
    assert orjson.loads(out.stdout) == sorted(
        [r for r in everything if r["campaign_id"] in ("spring", "tiny")],
        key=lambda r: -r["spend"],
    )
    out = report(
        engine_url, tmp_path, "--window", "3600", "--from", "2026-10-02", "--format", "json"
    )
    assert orjson.loads(out.stdout) == data.expected_report(
        current, date(2026, 10, 2), date(2026, 10, 4), seconds=3600
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--window", "0"), "must be > 0"),
        (("--window", "day"), "not a whole number"),
        (("--from", "2026-13-01"), "not a date"),
        (("--sort", "popularity"), "invalid choice"),
        (("--format", "xml"), "invalid choice"),
        (("--from", "2026-10-03", "--to", "2026-10-01"), "is before --from"),
    ],
)
def test_bad_flags_exit_2_with_a_clear_message(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    out = report(f"chdb://{tmp_path / 'store'}", tmp_path, *args)
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
