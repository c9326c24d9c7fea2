"""The log says a repeated failure once, then summaries, then that it recovered; Faust's
checks of its paused fetching are dropped; both are counted for the metrics."""

from __future__ import annotations

import logging

import faust.transport.drivers.aiokafka as faust_kafka
from prometheus_client import CollectorRegistry, generate_latest

from streams.logs import FalseAlarms, RepeatFilter, counts
from streams.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def text(self) -> list[str]:
        return [f"{r.levelname} {r.getMessage()}" for r in self.records]


def wired(summary: float = 30.0, quiet: float = 10.0) -> tuple[Clock, RepeatFilter, Lines]:
    """A logger whose handler has a RepeatFilter on a fake clock; summaries go to the same
    handler, as configure() wires them."""
    clock = Clock()
    lines = Lines()
    logger = logging.getLogger(f"test.logs.{id(lines)}")
    logger.propagate = False
    logger.handlers[:] = [lines]
    logger.setLevel(logging.DEBUG)
    repeats = RepeatFilter(summary, quiet, clock=clock, wall=lambda: clock.now, out=logger)
    lines.addFilter(repeats)
    return clock, repeats, lines


def record(level: int, msg: str, *args: object, name: str = "aiokafka") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_an_outage_is_one_line_then_a_summary_per_interval_then_recovered() -> None:
    clock, repeats, lines = wired(summary=30, quiet=10)
    before, _ = counts()
    # 60 s of outage: 50 errors a second, alternating node ids (one template).
    for _ in range(60):
        for i in range(50):
            lines.handle(record(logging.ERROR, "Unable connect to node with id %s: %s", i % 2, "x"))
        clock.now += 1
        repeats.tick()
    # The broker is back: nothing more comes.
    for _ in range(12):
        clock.now += 1
        repeats.tick()
    text = lines.text
    assert text[0] == "ERROR Unable connect to node with id 0: x"
    summaries = [t for t in text if "still failing" in t]
    assert len(summaries) == 2
    assert summaries[0].startswith("ERROR still failing: repeated 1499 more times")
    assert "repeated 1500 more times since the last summary, 2999 since" in summaries[1]
    (recovered,) = [t for t in text if "recovered" in t]
    assert recovered.startswith("INFO recovered: not seen for 10 s; repeated 2999 times")
    assert recovered.endswith("aiokafka: Unable connect to node with id 1: x")
    assert len(text) == 4
    after, _ = counts()
    assert after.get("ERROR", 0) - before.get("ERROR", 0) == 2999


def test_distinct_messages_and_lower_levels_are_not_held_back() -> None:
    clock, repeats, lines = wired()
    for _ in range(3):
        lines.handle(record(logging.INFO, "batch of %d events", 5))
        lines.handle(record(logging.WARNING, "Heartbeat failed for group %s", "g"))
        lines.handle(record(logging.ERROR, "Unable to update metadata from %r", 1))
        lines.handle(record(logging.ERROR, "Unable to update metadata from %r", 1, name="other"))
    assert len(lines.records) == 3 + 3  # 3 INFO lines, then the first of each of 3 keys
    # A message that comes back after it recovered is news again.
    clock.now += 11
    repeats.tick()
    assert sum("recovered" in t for t in lines.text) == 3
    lines.handle(record(logging.WARNING, "Heartbeat failed for group %s", "g"))
    assert lines.text[-1] == "WARNING Heartbeat failed for group g"


def test_a_single_occurrence_ends_silently_and_zero_turns_it_off() -> None:
    clock, repeats, lines = wired()
    lines.handle(record(logging.ERROR, "once"))
    clock.now += 60
    repeats.tick()
    assert lines.text == ["ERROR once"]
    _, off, every = wired(summary=0)
    for _ in range(5):
        every.handle(record(logging.ERROR, "again"))
    off.tick()
    assert every.text == ["ERROR again"] * 5


def test_what_is_held_back_at_exit_is_logged() -> None:
    _, repeats, lines = wired()
    for _ in range(4):
        lines.handle(record(logging.WARNING, "ClickHouse write failed: %s", "refused"))
    repeats.flush()
    assert lines.text[-1].startswith("WARNING still failing: repeated 3 more times")
    assert lines.text[-1].endswith("(at exit)")


def test_false_alarms_are_dropped_and_counted() -> None:
    checks = FalseAlarms()
    _, before = counts()
    slow = faust_kafka.AIOKafkaConsumerThread._make_slow_processing_error(
        None,  # type: ignore[arg-type]
        faust_kafka.SLOW_PROCESSING_STREAM_IDLE_SINCE_START,
        [faust_kafka.SLOW_PROCESSING_CAUSE_STREAM],
        setting="stream_processing_timeout",
        current_value=300.0,
    )
    driver = "faust.transport.drivers.aiokafka"
    for template in (
        slow,
        faust_kafka.SLOW_PROCESSING_NO_RECENT_FETCH,
        faust_kafka.SLOW_PROCESSING_NO_COMMIT_SINCE_START,
        faust_kafka.SLOW_PROCESSING_NO_HIGHWATER_SINCE_START,
    ):
        # As Faust's service logger writes it: its name in front of the template.
        message = "[^--AIOKafkaConsumerThread]: " + template
        assert not checks.filter(record(logging.ERROR, message, "TP", "5 minutes", name=driver))
    assert not checks.filter(
        record(logging.ERROR, "[^--Consumer]: Thread keepalive is not responding...", name="mode")
    )
    # Anything else from Faust, or the same words from elsewhere, still shows.
    assert checks.filter(record(logging.ERROR, "Committing raised exception: %r", 1, name=driver))
    assert checks.filter(
        record(logging.ERROR, faust_kafka.SLOW_PROCESSING_STREAM_IDLE, "TP", "x", name="streams")
    )
    # kafka-python's note that a step of its I/O thread took over 0.1 s.
    slow = "Task <Task object at 0x7f> ran for 0.393s (>0.100s threshold). It is blocking the "
    slow += "event loop -- likely a tight sync loop inside a coroutine."
    assert not checks.filter(record(logging.WARNING, slow, name="kafka.net.selector"))
    assert checks.filter(record(logging.WARNING, "Node 1 not ready", name="kafka.net.selector"))
    _, after = counts()
    assert after["faust_fetch_path"] - before.get("faust_fetch_path", 0) == 4
    assert after["thread_keepalive"] - before.get("thread_keepalive", 0) == 1
    assert after["kafka_slow_task"] - before.get("kafka_slow_task", 0) == 1


def test_metrics_export_what_the_log_no_longer_repeats() -> None:
    _, _, lines = wired()
    for _ in range(3):
        lines.handle(record(logging.CRITICAL, "disk on fire"))
    suppressed, _ = counts()
    exposition = generate_latest(Metrics(CollectorRegistry()).registry).decode()
    line = f'socialroi_log_repeats_suppressed_total{{level="CRITICAL"}} {suppressed["CRITICAL"]}.0'
    assert line in exposition
    assert suppressed["CRITICAL"] >= 2
