"""The quick start's data lands in the dashboards' default time range (issue 15, item 1)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from pipeline.settings import Settings
from pipeline.simulator import DEFAULT_START, default_start, simulate
from streams.simulate import config_from

DASHBOARDS = sorted(
    (Path(__file__).resolve().parents[2] / "deploy/grafana/dashboards").glob("*.json")
)


def _default_range_days(path: Path) -> int:
    time = json.loads(path.read_text())["time"]
    assert time["to"] == "now", path.name
    match = re.fullmatch(r"now-(\d+)d", time["from"])
    assert match, f"{path.name}: {time['from']}"
    return int(match[1])


def test_default_start_is_midnight_days_plus_one_before_now() -> None:
    now = datetime(2026, 12, 7, 19, 30, tzinfo=UTC)
    assert default_start(2, now) == "2026-12-04T00:00:00+00:00"
    # the same for every run of a day, so a seed still gives the same events that day
    assert default_start(2, now.replace(hour=0, minute=1)) == default_start(2, now)


def test_the_quick_start_lands_in_every_dashboards_default_range() -> None:
    """README and demo: ``simulate --events N --seed 7`` with the default days and start."""
    now = datetime.now(UTC)
    cfg = config_from(Settings(), 3000, 7)
    messages, _ = simulate(cfg)
    times = []
    for message in messages:
        try:
            body = orjson.loads(message.value)
        except orjson.JSONDecodeError:
            continue  # the simulator's invalid messages
        when = body.get("event_time") if isinstance(body, dict) else None
        if isinstance(when, str) and not when.startswith("2999"):  # 2999: its clock skew case
            times.append(datetime.fromisoformat(when.replace("Z", "+00:00")))
    assert len(times) > 2500
    for path in DASHBOARDS:
        earliest = now - timedelta(days=_default_range_days(path))
        assert earliest <= min(times), f"{path.name} opens after the data starts"
    assert max(times) <= now, "events ahead of the clock are dead letters"


def test_a_given_start_is_kept() -> None:
    cfg = config_from(Settings(), 100, 1, start=DEFAULT_START)
    assert cfg.start == DEFAULT_START
