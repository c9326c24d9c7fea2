"""The report period is one setting, checked at start against the tumbling sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.settings import DAILY_PERIOD_SECONDS, Settings, WindowSettings
from streams.bench import parse_windows
from streams.cli import main


def test_the_default_period_is_one_day_and_among_the_tumbling_sizes() -> None:
    windows = Settings().windows
    assert windows.report_period_seconds == DAILY_PERIOD_SECONDS == 86400
    assert windows.report_period_seconds in windows.tumbling_seconds


def test_dropping_the_daily_size_stops_every_command_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # were the check missing, no store opens in the checkout
    monkeypatch.setenv("SOCIALROI_WINDOWS__TUMBLING_SECONDS", "[60, 3600]")
    for command in (["config"], ["worker"], ["report"], ["migrate"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert "SOCIALROI_WINDOWS__TUMBLING_SECONDS [60,3600] lacks the report period 86400" in err


def test_a_period_other_than_a_day_is_refused_even_when_configured() -> None:
    with pytest.raises(ValidationError, match="built for daily periods"):
        WindowSettings(tumbling_seconds=(60, 3600), report_period_seconds=3600)


def test_period_zero_allows_windows_without_a_day_but_no_report(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOCIALROI_WINDOWS__TUMBLING_SECONDS", "[60]")
    monkeypatch.setenv("SOCIALROI_WINDOWS__REPORT_PERIOD_SECONDS", "0")
    assert Settings().windows.tumbling_seconds == (60,)
    for command in (["report"], ["report", "--window", "60", "--format", "html"], ["demo"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "SOCIALROI_WINDOWS__REPORT_PERIOD_SECONDS is 0" in err, command
    assert not (tmp_path / ".local").exists()  # refused before any store was opened


def test_a_bench_window_set_without_a_day_runs_its_worker_with_no_report_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for text, period in (("60", 0), ("60,3600x60", 0), ("60,86400", 86400)):
        for name, value in parse_windows(text).env().items():
            monkeypatch.setenv(name, value)
        assert Settings().windows.report_period_seconds == period, text
        monkeypatch.delenv("SOCIALROI_WINDOWS__REPORT_PERIOD_SECONDS", raising=False)
    assert parse_windows("default").env() == {}
