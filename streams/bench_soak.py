"""``socialroi bench --soak``: does one worker hold a steady state over days of event time?

The worker runs exactly as in the bench's drain (fresh topics, consumer group and store,
chDB by default, ``/metrics`` on a free port): one process, or with ``--processes 2`` one
per stage (ClickHouse server only), whose RSS is then the sum of both. The streaming simulator
feeds it ``--soak-rate`` events/s for ``--soak-minutes``, with ``--soak-days`` of event time
spread over those minutes: event time runs far ahead of the wall clock (14 days in 10
minutes is about 2,000x), so the run covers more than the longest window and the
attribution lookback (7 days each by default), and every kind of state the worker keeps
has been opened, made final and dropped many times before the end. The default number of
days (:func:`steady_days`) puts that moment well before the last third of the run, the
third the verdict reads RSS over: before it, state still grows by design (touches are kept
a whole lookback). The pace follows the
simulator's daily rhythm: quiet hours of event time go by about twice as fast as busy ones.

The simulator runs without its ground truth (``follow_truth=False``): the truth keeps every
window's counters and every credited conversion, so it grows with the run, and the soak
checks steadiness, not correctness (the drain and the integration tests check that).

Every second the bench samples the messages handed to the producer so far, the worker's
``/metrics`` (ingest messages consumed, the watermark and freshness gauges) and its
``VmRSS``. Per minute of production it shows the input sent, the worker's throughput (ingest
messages consumed per second over the minute), the lag (messages sent but not consumed yet,
and the seconds of input at the target rate they are) and RSS at the end of the minute.

Verdict (``verdict``): PASS when the lag at the end of production is under 10 s of input at
the target rate and RSS grew by under 5% over the last third of production, along the
least-squares line through that third's samples (one a second), else FAIL with the figures.

Bounded in time by itself: at most 120 s for the worker to join its group, production for
exactly the duration (fewer messages if the producer cannot keep the rate: the figures say
so), at most 120 s of drain, then SIGTERM (and a kill 60 s later); the topics and the store
are removed afterwards as in every bench run.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

from pipeline.settings import Settings
from pipeline.simulator import DEFAULT_START, Simulation, SimulationConfig
from streams.bench import fresh_run, parse_windows
from streams.bench_probes import end_offsets_total, scrape
from streams.bench_workers import BenchError, Stages, WindowSet
from streams.producer import EventProducer, OutgoingMessage, by_campaign_topic, topic_for_kind
from streams.simulate import config_from

__all__ = ["Minute", "Sample", "Verdict", "per_minute", "rss_trend", "run_soak", "verdict"]

MAX_LAG_SECONDS: Final = 10.0
MAX_RSS_GROWTH: Final = 0.05
SAMPLE_SECONDS: Final = 1.0
MINUTE_SECONDS: Final = 60.0
JOIN_TIMEOUT_SECONDS: Final = 120.0
DRAIN_TIMEOUT_SECONDS: Final = 120.0
# The input's event time is the newest event_time of every EVERY-th message, leaving out
# stamps ahead of the wall clock (the simulator's clock-skew messages, which the worker
# dead-letters); late messages are older, so they do not move it. Event time runs
# 1,000x or more ahead of the clock: 100 messages at 10,000/s are ~13 s of it.
_EVENT_TIME_EVERY: Final = 100


# -- the pure part: samples to minutes and a verdict --------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """What the bench saw at one moment of production."""

    at: float  # seconds since production began
    sent: int  # messages handed to the producer so far
    consumed: float  # ingest messages the worker consumed so far
    rss_bytes: int  # the worker's VmRSS (both processes' with one per stage)
    input_event_time: float  # newest event time sent, epoch seconds (0: not known yet)
    watermark: float  # socialroi_watermark_seconds (0: none yet)
    freshness: float  # socialroi_last_write_event_time_seconds (0: none yet)

    @property
    def lag(self) -> int:
        return max(0, self.sent - round(self.consumed))


@dataclass(frozen=True, slots=True)
class Minute:
    """One minute of production (the last may be shorter)."""

    minute: int  # 1-based
    seconds: float  # wall time between this minute's last sample and the one before
    sent: int  # input sent in the minute
    worker_events_per_s: float  # ingest messages consumed per second over the minute
    lag_messages: int  # at the end of the minute
    lag_seconds: float  # lag_messages at the target rate
    rss_bytes: int  # at the end of the minute
    input_event_time: float  # epoch seconds, 0 if not known
    watermark_behind_seconds: float | None  # input event time - watermark, event time
    freshness_behind_seconds: float | None  # input event time - freshness gauge


def _behind(input_time: float, gauge: float) -> float | None:
    return input_time - gauge if input_time > 0 and gauge > 0 else None


def per_minute(samples: Sequence[Sample], rate: float, duration: float) -> list[Minute]:
    """One row per minute of a production that lasted ``duration`` seconds.

    ``samples[0]`` is the baseline (production starting); every later sample belongs to the
    minute its time falls in, a sample past ``duration`` (the one taken after the last
    send) to the last minute. A minute ends at its last sample and starts at the end of
    the minute before, so throughput is over the time actually between the two samples.
    Minutes without a sample (the worker did not answer) are left out."""
    if not samples:
        return []
    last_index = max(0, math.ceil(duration / MINUTE_SECONDS) - 1)
    ends: dict[int, Sample] = {}
    for s in samples[1:]:
        index = min(last_index, max(0, math.ceil(s.at / MINUTE_SECONDS) - 1))
        ends[index] = s  # samples come in time order: the last one wins
    rows: list[Minute] = []
    before = samples[0]
    for index in sorted(ends):
        end = ends[index]
        span = end.at - before.at
        rows.append(
            Minute(
                minute=index + 1,
                seconds=span,
                sent=end.sent - before.sent,
                worker_events_per_s=(end.consumed - before.consumed) / span if span > 0 else 0.0,
                lag_messages=end.lag,
                lag_seconds=end.lag / rate,
                rss_bytes=end.rss_bytes,
                input_event_time=end.input_event_time,
                watermark_behind_seconds=_behind(end.input_event_time, end.watermark),
                freshness_behind_seconds=_behind(end.input_event_time, end.freshness),
            )
        )
        before = end
    return rows


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    lag_messages: int  # at the end of production
    lag_seconds: float  # of input at the target rate
    rss_from_bytes: int  # the RSS trend at the start of the last third
    rss_to_bytes: int  # the RSS trend at the end
    rss_growth: float  # (to - from) / from
    rss_samples: int  # readable RSS samples the trend is fitted to
    rss_first_bytes: int  # the first and last of those samples, as read
    rss_last_bytes: int
    max_lag_seconds: float
    max_rss_growth: float

    def line(self) -> str:
        lag_ok = self.lag_seconds < self.max_lag_seconds
        rss_ok = self.rss_growth < self.max_rss_growth
        lag = (
            f"lag at the end {self.lag_messages:,} messages = {self.lag_seconds:.1f} s of "
            f"input ({'under' if lag_ok else 'NOT under'} {self.max_lag_seconds:g} s)"
        )
        rss = (
            f"RSS trend {self.rss_from_bytes / 2**20:,.0f} -> {self.rss_to_bytes / 2**20:,.0f} "
            f"MiB over the last third, {self.rss_growth:+.1%} "
            f"({'under' if rss_ok else 'NOT under'} {self.max_rss_growth:.0%}; "
            f"least squares over {self.rss_samples} samples, read "
            f"{self.rss_first_bytes / 2**20:,.0f} -> {self.rss_last_bytes / 2**20:,.0f} MiB)"
        )
        return f"{'PASS' if self.passed else 'FAIL'}: {lag}; {rss}"


def rss_trend(samples: Sequence[Sample]) -> tuple[float, float]:
    """The least-squares line through the samples' (time, RSS): its values at the first
    and the last sample's time. RSS goes up and down as Python, the Kafka client and
    RocksDB take and give back memory between batches, so two single readings
    say more about where each fell in that cycle than about a trend (the README's soak
    table has a minute reading 600 MiB below the ones either side of it)."""
    n = len(samples)
    if n < 2:
        raise ValueError("a trend needs two samples")
    mean_t = sum(s.at for s in samples) / n
    mean_r = sum(s.rss_bytes for s in samples) / n
    var = sum((s.at - mean_t) ** 2 for s in samples)
    slope = (
        sum((s.at - mean_t) * (s.rss_bytes - mean_r) for s in samples) / var if var else 0.0
    )
    return (
        mean_r + slope * (samples[0].at - mean_t),
        mean_r + slope * (samples[-1].at - mean_t),
    )


def verdict(
    samples: Sequence[Sample],
    rate: float,
    max_lag_seconds: float = MAX_LAG_SECONDS,
    max_rss_growth: float = MAX_RSS_GROWTH,
) -> Verdict:
    """PASS when the lag at the last sample is under ``max_lag_seconds`` of input at
    ``rate`` and RSS grew by under ``max_rss_growth`` over the last third of the run,
    along the least-squares line through the samples of that third (:func:`rss_trend`).
    Samples whose RSS could not be read (0) are left out; fewer than two readable ones in
    the third fail."""
    if not samples:
        raise ValueError("no samples")
    end = samples[-1]
    third = [s for s in samples if s.at >= end.at * 2 / 3 and s.rss_bytes > 0]
    if len(third) >= 2:
        start, stop = rss_trend(third)
        growth = (stop - start) / start if start > 0 else math.inf
    else:
        start = stop = 0.0
        growth = math.inf
    lag_seconds = end.lag / rate
    return Verdict(
        passed=lag_seconds < max_lag_seconds and growth < max_rss_growth,
        lag_messages=end.lag,
        lag_seconds=lag_seconds,
        rss_from_bytes=round(start),
        rss_to_bytes=round(stop),
        rss_growth=growth,
        rss_samples=len(third),
        rss_first_bytes=third[0].rss_bytes if third else 0,
        rss_last_bytes=third[-1].rss_bytes if third else 0,
        max_lag_seconds=max_lag_seconds,
        max_rss_growth=max_rss_growth,
    )


# -- the run ------------------------------------------------------------------------------


class _Input:
    """The simulator's messages for the producer until ``deadline`` (monotonic): counts
    them and follows their event time. Stops with ``BenchError`` if the worker exits."""

    def __init__(
        self, run: Simulation, topics: dict[str, str], deadline: float, workers: Stages
    ) -> None:
        self.sent = 0
        self.event_time = 0.0  # read by the sampler thread: one float, replaced whole
        self._run = run
        self._topics = topics
        self._deadline = deadline
        self._workers = workers

    def __iter__(self) -> Iterator[OutgoingMessage]:
        topics, deadline = self._topics, self._deadline
        for m in self._run.messages():
            if time.monotonic() >= deadline:
                return
            if self.sent % _EVENT_TIME_EVERY == 0:
                self._workers.check("soaking")
                self._note(m.value)
            yield OutgoingMessage(topics[m.kind], m.key, m.value, m.partition)
            self.sent += 1

    def _note(self, value: bytes) -> None:
        try:
            stamp = datetime.fromisoformat(orjson.loads(value)["event_time"]).timestamp()
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return  # one of the simulator's invalid messages
        if self.event_time < stamp <= time.time():
            self.event_time = stamp


class _Sampler:
    """Takes a ``Sample`` every ``SAMPLE_SECONDS`` in a thread (a moment the worker's
    ``/metrics`` does not answer is left out) and prints each minute to stderr once the
    next has begun."""

    def __init__(
        self, workers: Stages, feed: _Input, began: float, rate: float, duration: float
    ) -> None:
        self.samples: list[Sample] = []
        self._workers, self._feed, self._began = workers, feed, began
        self._rate, self._duration = rate, duration
        self._shown = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def take(self) -> Sample | None:
        sent, event_time = self._feed.sent, self._feed.event_time
        s = scrape(self._workers.port("ingest"))
        if s is None:
            return None
        sample = Sample(
            at=s.at - self._began,
            sent=sent,
            consumed=s.consumed_ingest,
            rss_bytes=self._workers.rss_bytes(),
            input_event_time=event_time,
            watermark=s.watermark,
            freshness=s.freshness,
        )
        self.samples.append(sample)
        return sample

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            if self.take() is not None:
                self.report(final=False)

    def report(self, *, final: bool) -> None:
        rows = per_minute(self.samples, self._rate, self._duration)
        if not final:
            rows = rows[:-1]  # the newest minute may still grow
        for m in rows[self._shown :]:
            _say(
                f"soak minute {m.minute}: sent {m.sent:,}, worker "
                f"{m.worker_events_per_s:,.0f} ev/s, lag {m.lag_messages:,} "
                f"({m.lag_seconds:.1f} s), RSS {m.rss_bytes / 2**20:,.0f} MiB"
            )
        self._shown = max(self._shown, len(rows))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _soak_start(days: int) -> str:
    """The simulator's usual start, or earlier if the run would otherwise reach past now
    (the worker dead-letters events stamped ahead of its clock)."""
    default = datetime.fromisoformat(DEFAULT_START)
    latest = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    latest -= timedelta(days=days + 1)
    return min(default, latest).isoformat()


def _window_set(args: argparse.Namespace) -> WindowSet:
    if args.windows and len(args.windows) > 1:
        raise BenchError("--soak runs one window set: give --windows at most once")
    return args.windows[0] if args.windows else parse_windows("default")


def _campaigns(args: argparse.Namespace) -> int:
    if args.campaigns and len(args.campaigns) > 1:
        raise BenchError("--soak runs one campaign count: give --campaigns one number")
    return int(args.campaigns[0]) if args.campaigns else 1000


def _longest_window_seconds(settings: Settings, windows: WindowSet) -> int:
    tumbling = (
        windows.tumbling if windows.tumbling is not None else settings.windows.tumbling_seconds
    )
    hopping = windows.hopping if windows.hopping is not None else settings.windows.hopping
    return max([*tumbling, *(size for size, _ in hopping)])


def steady_days(horizon_seconds: int) -> int:
    """Days of event time such that state has had ``horizon_seconds`` (the longest window
    or the lookback) to fill, and a third of it more to settle, by two thirds of the run:
    twice it, rounded up. (With 1.5 times it, the last third began just as the lookback's
    touches reached their full span, and the soak's RSS rose with them.)"""
    return math.ceil(2 * horizon_seconds / 86_400)


def run_soak(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Run the soak; returns the JSON-ready result (``verdict.passed`` says PASS)."""
    windows, campaigns = _window_set(args), _campaigns(args)
    longest = _longest_window_seconds(settings, windows)
    lookback = settings.attribution.lookback_seconds
    rate, minutes = args.soak_rate, args.soak_minutes
    days = args.soak_days or steady_days(max(longest, lookback))
    if rate <= 0 or minutes <= 0 or days < 1:
        raise BenchError("--soak-rate and --soak-minutes must be > 0 and --soak-days >= 1")
    if len(args.processes) != 1:
        raise BenchError("--soak runs one worker setup: give --processes one number")
    processes = args.processes[0]
    if processes == 2 and args.backend != "server":
        raise BenchError("--processes 2 needs --backend server (chDB: one process per store)")
    duration = minutes * 60.0
    if days * 86_400 <= max(longest, lookback):
        print(
            f"bench: --soak-days {days} does not span the longest window ({longest} s) and "
            f"the lookback ({lookback} s): state may never reach its steady size",
            file=sys.stderr,
        )
    events = max(100, round(rate * duration))
    cfg = config_from(settings, events, args.seed, campaigns, days, _soak_start(days))
    setup = {
        "rate": rate,
        "minutes": minutes,
        "days": days,
        "events_planned": events,
        "campaigns": campaigns,
        "windows": windows.name,
        "window_specs": windows.describe(settings),
        "longest_window_seconds": longest,
        "lookback_seconds": lookback,
        "event_time_pace": days * 86_400 / duration,
        "start": cfg.start,
        "backend": args.backend,
        "processes": processes,
        "partitions": settings.kafka.partitions,
        "seed": args.seed,
    }
    _say(
        f"soak: {rate:,.0f} events/s for {minutes:g} min, {days} days of event time "
        f"({setup['event_time_pace']:,.0f}x the wall clock), {campaigns} campaigns, "
        f"windows {windows.name}, {args.backend}, {processes} worker process(es)"
    )
    with fresh_run(settings, args.backend) as (s, run_dir):
        workers = Stages(s, windows, run_dir, processes, scrape_every=None)
        try:

            def assigned() -> bool:
                scrapes = [scrape(port) for port in workers.ports.values()]
                return all(last is not None and last.assigned > 0 for last in scrapes)

            workers.wait_for(assigned, "waiting for the worker to join its group", 120)
            startup = time.monotonic() - workers.spawned
            produced, samples, drain = _produce_and_drain(workers, s, cfg, rate, duration)
        finally:
            workers.stop()
    if len(samples) < 2:
        raise BenchError("the worker's /metrics never answered during production")
    result_verdict = verdict(samples, rate)
    return {
        "command": "socialroi " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "host": {
            "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(),
            "python": sys.version.split()[0],
        },
        "setup": setup,
        "startup_seconds": startup,
        "produced": produced,
        "minutes": [asdict(m) for m in per_minute(samples, rate, duration)],
        "drain": drain,
        "verdict": {**asdict(result_verdict), "line": result_verdict.line()},
    }


def _produce_and_drain(
    workers: Stages, s: Settings, cfg: SimulationConfig, rate: float, duration: float
) -> tuple[dict[str, Any], list[Sample], dict[str, Any]]:
    """Production for ``duration`` seconds with its samples, then the bounded drain."""
    run = Simulation(cfg, follow_truth=False)
    topics = topic_for_kind(s)
    producer = EventProducer(s, client_id="socialroi-bench-soak")
    producer.start(topics.values())
    try:
        began = time.monotonic()
        feed = _Input(run, topics, began + duration, workers)
        sampler = _Sampler(workers, feed, began, rate, duration)
        # the baseline; the worker answered a moment ago, when it joined its group
        workers.wait_for(lambda: sampler.take() is not None, "scraping the worker", 30)
        sampler.start()
        try:
            producer.send_all(feed, rate=rate)
            producer.flush()
        finally:
            sampler.stop()
        elapsed = time.monotonic() - began
        # the end of production, the verdict's moment
        workers.wait_for(lambda: sampler.take() is not None, "scraping the worker", 30)
        sampler.report(final=True)
    finally:
        producer.close()
    produced = {
        "messages": feed.sent,
        "seconds": elapsed,
        "events_per_s": feed.sent / elapsed,
        "event_time_from": cfg.start,
        "event_time_to": _iso(feed.event_time),
    }
    return produced, sampler.samples, _drain(s, workers, feed.sent)


def _drain(s: Settings, workers: Stages, sent: int) -> dict[str, Any]:
    """Wait at most ``DRAIN_TIMEOUT_SECONDS`` for every message sent to be in ClickHouse
    (ingest batches hold them all, then the aggregate stage's hold the repartition topic)."""
    began = time.monotonic()
    deadline = began + DRAIN_TIMEOUT_SECONDS
    repartitioned: int | None = None
    left = sent
    while time.monotonic() < deadline and all(
        p.proc.poll() is None for p in workers.procs.values()
    ):
        last = scrape(workers.port("ingest"))
        if last is not None:
            ingested = last.handled.get("ingest", 0.0)
            left = max(0, sent - round(ingested))
            if not left:
                if repartitioned is None:  # stage one awaited all of it before finishing
                    repartitioned = end_offsets_total(s, by_campaign_topic(s))
                aggregate = scrape(workers.port("aggregate"))
                handled = aggregate.handled.get("aggregate", 0.0) if aggregate else 0.0
                left = max(0, repartitioned - round(handled))
                if not left:
                    return {"complete": True, "seconds": time.monotonic() - began, "left": 0}
        time.sleep(0.5)
    return {
        "complete": False,
        "seconds": time.monotonic() - began,
        "left": left,
        "stage": "ingest" if repartitioned is None else "aggregate",
    }


def _iso(epoch: float) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds") if epoch else None


def _say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)
