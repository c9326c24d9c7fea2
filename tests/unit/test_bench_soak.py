"""The soak's arithmetic: samples to minutes, the PASS/FAIL rule, and its truth-less input."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from pipeline.simulator import Simulation, SimulationConfig
from streams.bench_soak import Sample, per_minute, steady_days, verdict

MiB = 2**20


def sample(
    at: float,
    sent: int,
    consumed: float,
    rss_mib: float = 500,
    event_time: float = 0.0,
    watermark: float = 0.0,
    freshness: float = 0.0,
) -> Sample:
    return Sample(at, sent, consumed, round(rss_mib * MiB), event_time, watermark, freshness)


# -- per minute -------------------------------------------------------------------------


def test_a_minute_is_measured_between_its_last_sample_and_the_one_before() -> None:
    samples = [
        sample(0.0, 0, 0),
        sample(30.0, 3_000, 2_000),
        sample(60.0, 6_000, 5_400, rss_mib=510),  # end of minute 1
        sample(90.0, 9_000, 8_000),
        sample(120.0, 12_000, 11_000, rss_mib=520),  # end of minute 2
    ]
    rows = per_minute(samples, rate=100.0, duration=120.0)
    assert [r.minute for r in rows] == [1, 2]
    first, second = rows
    assert first.seconds == 60.0
    assert first.sent == 6_000
    assert first.worker_events_per_s == 90.0  # 5,400 in 60 s
    assert first.lag_messages == 600
    assert first.lag_seconds == 6.0  # 600 at 100/s
    assert first.rss_bytes == 510 * MiB
    assert second.sent == 6_000
    assert second.worker_events_per_s == pytest.approx(5_600 / 60)
    assert second.lag_messages == 1_000
    assert second.rss_bytes == 520 * MiB


def test_the_sample_after_the_last_send_counts_in_the_last_minute() -> None:
    # the producer's flush ends a little after the nominal 60 s: no second minute of 0.4 s
    samples = [sample(0.0, 0, 0), sample(59.0, 5_900, 5_800), sample(60.4, 6_000, 5_990)]
    rows = per_minute(samples, rate=100.0, duration=60.0)
    assert len(rows) == 1
    assert rows[0].seconds == pytest.approx(60.4)
    assert rows[0].sent == 6_000
    assert rows[0].lag_messages == 10


def test_a_short_last_minute_and_a_minute_without_samples() -> None:
    samples = [
        sample(0.0, 0, 0),
        sample(60.0, 600, 600),
        # minute 2: the worker did not answer
        sample(180.0, 1_800, 1_500),
        sample(200.0, 2_000, 1_900),  # a run of 200 s: minute 4 is 20 s long
    ]
    rows = per_minute(samples, rate=10.0, duration=200.0)
    assert [r.minute for r in rows] == [1, 3, 4]
    assert rows[1].seconds == 120.0  # from the end of minute 1
    assert rows[1].worker_events_per_s == 900 / 120
    assert rows[2].seconds == 20.0
    assert rows[2].worker_events_per_s == 20.0


def test_lag_never_counts_messages_consumed_ahead_of_the_sample() -> None:
    # consumed is scraped a moment after sent was read: it can be ahead
    rows = per_minute([sample(0, 0, 0), sample(60, 100, 103)], rate=10.0, duration=60.0)
    assert rows[0].lag_messages == 0


def test_gauges_are_shown_behind_the_input_only_once_both_are_known() -> None:
    samples = [
        sample(0.0, 0, 0),
        sample(60.0, 10, 10, event_time=1_000_000.0),  # no watermark yet
        sample(120.0, 20, 20, event_time=1_036_000.0, watermark=1_000_000.0, freshness=1_030_000.0),
    ]
    first, second = per_minute(samples, rate=1.0, duration=120.0)
    assert first.watermark_behind_seconds is None
    assert first.freshness_behind_seconds is None
    assert second.watermark_behind_seconds == 36_000.0
    assert second.freshness_behind_seconds == 6_000.0


def test_no_samples_no_minutes() -> None:
    assert per_minute([], rate=1.0, duration=60.0) == []
    assert per_minute([sample(0, 0, 0)], rate=1.0, duration=60.0) == []


# -- the verdict ------------------------------------------------------------------------


def run(lag_at_end: int, rss_mib: Callable[[int], float]) -> list[Sample]:
    """A 600 s run at 1,000/s sampled every second, RSS ``rss_mib(t)``; the lag at the end
    is ``lag_at_end``."""
    out = [sample(t, t * 1_000, t * 1_000, rss_mib=rss_mib(t)) for t in range(600)]
    out.append(sample(600.0, 600_000, 600_000 - lag_at_end, rss_mib=rss_mib(600)))
    return out


def warm_then(last_third: Callable[[int], float]) -> Callable[[int], float]:
    """Grows from 300 to 500 MiB over the first two thirds (warm-up), then ``last_third``."""
    return lambda t: 300 + t / 2 if t < 400 else last_third(t)


def test_pass_when_caught_up_and_flat() -> None:
    v = verdict(run(9_999, warm_then(lambda t: 500 + 24 * (t - 400) / 200)), rate=1_000.0)
    assert v.passed
    assert v.lag_messages == 9_999
    assert v.lag_seconds == pytest.approx(9.999)
    assert v.rss_from_bytes == pytest.approx(500 * MiB, rel=1e-6)  # the warm-up is left out
    assert v.rss_growth == pytest.approx(0.048)
    assert v.rss_samples == 201
    assert v.line().startswith("PASS: lag at the end 9,999 messages = 10.0 s")


def test_fail_when_the_lag_reaches_ten_seconds_of_input() -> None:
    v = verdict(run(10_000, warm_then(lambda t: 500)), rate=1_000.0)
    assert not v.passed
    assert v.lag_seconds == 10.0
    assert "NOT under 10 s" in v.line()
    assert v.line().startswith("FAIL")


def test_fail_when_the_rss_trend_grows_five_percent_over_the_last_third() -> None:
    v = verdict(run(0, warm_then(lambda t: 500 + 25 * (t - 400) / 200)), rate=1_000.0)
    assert not v.passed
    assert v.rss_growth == pytest.approx(0.05)
    assert "+5.0%" in v.line()
    assert "NOT under 5%" in v.line()


def sawtooth(t: int) -> float:
    """1,500 MiB, plus up to 150 MiB taken and given back in 41 s cycles: no trend."""
    return 1_500 + 150 * (((t - 400) % 41) / 41)


def test_a_sawtooth_without_a_trend_passes_whatever_phase_the_ends_read() -> None:
    samples = run(0, warm_then(sawtooth))
    third = [s for s in samples if s.at >= 400]
    # the two readings alone: the third starts low in a cycle and ends high (+9%)
    assert third[-1].rss_bytes / third[0].rss_bytes - 1 > 0.05
    v = verdict(samples, rate=1_000.0)
    assert v.passed, v.line()
    assert abs(v.rss_growth) < 0.02  # the partial last cycle tilts the line a little
    assert v.rss_first_bytes == third[0].rss_bytes and v.rss_last_bytes == third[-1].rss_bytes


def test_a_sawtooth_on_a_climb_fails() -> None:
    v = verdict(run(0, warm_then(lambda t: sawtooth(t) + 0.6 * (t - 400))), rate=1_000.0)
    assert not v.passed  # 120 MiB over 200 s on top of ~1,575 MiB: +7.6%, and the tilt
    assert 0.07 < v.rss_growth < 0.10


def test_a_shrinking_rss_passes() -> None:
    v = verdict(run(0, warm_then(lambda t: 600 - (t - 400) / 2)), rate=1_000.0)
    assert v.passed
    assert v.rss_growth < 0


def test_the_lag_is_in_seconds_of_the_target_rate() -> None:
    samples = run(10_000, warm_then(lambda t: 500))
    assert verdict(samples, rate=2_000.0).passed  # 5 s of input at 2,000/s
    assert not verdict(samples, rate=2_000.0, max_lag_seconds=4.0).passed


def test_unreadable_rss_samples_are_left_out_and_too_few_fail() -> None:
    flat = run(0, warm_then(lambda t: 500))
    holes = [s if s.at % 2 else sample(s.at, s.sent, s.consumed, rss_mib=0) for s in flat]
    v = verdict(holes, rate=1_000.0)
    assert v.passed and v.rss_samples == 100
    none = [sample(s.at, s.sent, s.consumed, rss_mib=0 if s.at >= 400 else 500) for s in flat]
    v = verdict(none, rate=1_000.0)
    assert not v.passed and v.rss_growth == math.inf


def test_no_samples_is_an_error() -> None:
    with pytest.raises(ValueError):
        verdict([], rate=1.0)


# -- the input --------------------------------------------------------------------------


def test_the_simulator_makes_the_same_messages_without_its_truth() -> None:
    cfg = SimulationConfig(events=3_000, seed=4, campaigns=3, days=3)
    followed, alone = Simulation(cfg), Simulation(cfg, follow_truth=False)
    assert list(alone.messages()) == list(followed.messages())
    assert alone.sent == followed.sent == 3_000
    assert followed.truth.late + followed.truth.duplicates > 0
    assert alone.truth.late == alone.truth.duplicates == alone.truth.dead_letters == 0


def test_the_default_days_fill_the_state_before_the_last_third() -> None:
    week = 7 * 86_400
    assert steady_days(week) == 14  # the defaults: 7-day lookback and weekly window
    for horizon in (3600, 86_400, week, 30 * 86_400):
        days = steady_days(horizon)
        # full, and settled for a third of the horizon more, by two thirds of the event time
        assert days * 86_400 * 2 / 3 >= horizon * 4 / 3
        assert (days - 1) * 86_400 * 2 / 3 < horizon * 4 / 3  # and not a day more
