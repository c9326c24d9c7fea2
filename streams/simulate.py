"""``socialroi simulate``: produce the simulator's traffic and write its ground truth."""

from __future__ import annotations

import argparse
import logging
import time
from datetime import UTC, datetime

from pipeline.money import Rates
from pipeline.settings import Settings
from pipeline.simulator import Simulation, SimulationConfig, default_start, truth_config
from streams.present.progress import Reporter
from streams.producer import EventProducer, OutgoingMessage, ensure_topics, topic_for_kind

__all__ = ["config_from", "run_simulation"]

log = logging.getLogger(__name__)


def config_from(
    settings: Settings,
    events: int,
    seed: int,
    campaigns: int = 5,
    days: int = 2,
    start: str | None = None,
) -> SimulationConfig:
    """Simulation parameters that agree with the settings the worker will use. Without
    ``start`` the days end before today (``pipeline.simulator.default_start``), so the data
    lands in the dashboards' default range; give ``start`` for the same event times on
    every run."""
    costs = settings.costs
    return SimulationConfig(
        events=events,
        seed=seed,
        campaigns=campaigns,
        days=days,
        start=start or default_start(days, datetime.now(UTC)),
        truth=truth_config(
            settings.kafka.partitions,
            Rates.from_file(costs.base_currency, costs.rates_file),
            settings.windows,
            settings.attribution,
            costs,
        ),
    )


def run_simulation(settings: Settings, args: argparse.Namespace) -> None:
    """Produce the messages as the simulator makes them (memory does not grow with
    ``--events``), then write the truth it accumulated. Nothing is written if sending
    fails: a truth for messages that did not all arrive would be wrong."""
    cfg = config_from(settings, args.events, args.seed, args.campaigns, args.days, args.start)
    run = Simulation(cfg)
    ensure_topics(settings)
    topics = topic_for_kind(settings)
    producer = EventProducer(settings, client_id="socialroi-simulator")
    producer.start(topics.values())
    began = time.monotonic()
    progress = Reporter("simulate", "messages sent", args.events)
    try:
        producer.send_all(
            progress.counted(
                OutgoingMessage(topics[m.kind], m.key, m.value, m.partition) for m in run.messages()
            ),
            rate=args.rate,
        )
    finally:
        progress.close()
        producer.close()
    elapsed = time.monotonic() - began
    with args.truth.open("wb") as out:
        run.write_truth(out)
    truth = run.truth
    print(
        f"simulate: sent {run.sent} messages in {elapsed:.1f}s "
        f"({run.sent / max(elapsed, 1e-9):,.0f}/s); {truth.dead_letters} "
        f"invalid, {truth.late} late, {truth.duplicates} duplicates; "
        f"truth written to {args.truth}"
    )
