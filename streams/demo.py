"""``socialroi demo``: the whole pipeline on the embedded default, end to end.

Starts the local Kafka broker if none answers, simulates traffic, runs the worker into
embedded ClickHouse (chDB) until it has drained, verifies against the truth, prints KPIs per
campaign, and stops what it started. Each run uses its own topics and store, so runs never
see each other's data.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipeline.kpi import MICROS
from pipeline.settings import Settings
from sinks import kpi_rows, open_backend
from streams.run import verify, worker_main
from streams.simulate import run_simulation

__all__ = ["run_demo"]

_REPO = Path(__file__).resolve().parents[1]
_KAFKA_SCRIPT = _REPO / "deploy" / "local" / "kafka.sh"


def _answers(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


def _demo_settings(settings: Settings, run_id: str, state: Path) -> Settings:
    topics = settings.topics.model_copy(
        update={
            name: f"demo-{run_id}.{getattr(settings.topics, name)}"
            for name in ("social", "web", "costs", "campaigns", "dead_letters", "late")
        }
    )
    return settings.model_copy(
        update={
            "topics": topics,
            "worker": settings.worker.model_copy(
                update={"app_id": f"socialroi-demo-{run_id}", "data_dir": state / "worker"}
            ),
            "clickhouse": settings.clickhouse.model_copy(
                update={"url": type(settings.clickhouse.url)(f"chdb://{state / 'chdb'}")}
            ),
            "metrics": settings.metrics.model_copy(update={"port": 0}),
        }
    )


def _print_kpis(console: Console, settings: Settings) -> None:
    backend = open_backend(settings.clickhouse.url.get_secret_value())
    backend.start()
    try:
        rows = kpi_rows(backend, window_seconds=86400, window_kind="tumbling")
    finally:
        backend.close()
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        for name, value in row.items():
            if isinstance(value, int) and not name.startswith("window"):
                totals[row["campaign_id"] or "(no campaign)"][name] += value
    table = Table(title="KPIs per campaign (all days, embedded ClickHouse)")
    for column in (
        "campaign",
        "impressions",
        "engagements",
        "eng. rate",
        "clicks",
        "CTR",
        "visits",
        "follows net",
        "net sentiment",
        f"spend {settings.costs.base_currency}",
        f"service saved {settings.costs.base_currency}",
    ):
        table.add_column(column, justify="left" if column == "campaign" else "right")
    for campaign, t in sorted(totals.items()):
        engagements = t["likes"] + t["comments"] + t["shares"] + t["saves"]
        impressions = t["impressions"]
        pos, neg = t["mentions_positive"], t["mentions_negative"]
        spend = (
            t["media_spend_micros"] + t["effort_spend_micros"] + t["tools_spend_micros"]
        ) / MICROS
        table.add_row(
            campaign,
            f"{impressions:,}",
            f"{engagements:,}",
            f"{engagements / impressions:.2%}" if impressions else "-",
            f"{t['clicks']:,}",
            f"{t['clicks'] / impressions:.2%}" if impressions else "-",
            f"{t['visits']:,}",
            f"{t['follows'] - t['unfollows']:+,}",
            f"{(pos - neg) / (pos + neg):+.2f}" if pos + neg else "-",
            f"{spend:,.2f}",
            f"{t['service_savings_micros'] / MICROS:,.2f}",
        )
    console.print(table)


def run_demo(settings: Settings, events: int, seed: int) -> int:
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped or logged: keep the KPI table readable
    run_id = time.strftime("%Y%m%d%H%M%S")
    state_root = Path(".local") / "demo"
    shutil.rmtree(state_root, ignore_errors=True)  # earlier demos' stores
    state = state_root / run_id
    state.mkdir(parents=True)
    demo = _demo_settings(settings, run_id, state)
    started_kafka = False
    if not _answers(demo.kafka.bootstrap_servers):
        console.print("[bold]starting the local Kafka broker[/] (first run downloads it)")
        subprocess.run(["bash", str(_KAFKA_SCRIPT), "start"], check=True)
        started_kafka = True
    try:
        truth = state / "truth.json"
        console.rule("1. simulate")
        run_simulation(
            demo,
            argparse.Namespace(
                events=events, seed=seed, truth=truth, rate=None, campaigns=5, days=2, start=None
            ),
        )
        console.rule("2. worker (Kafka -> Faust -> embedded ClickHouse)")
        began = time.monotonic()

        async def drain() -> None:
            await worker_main(demo, asyncio.Event(), stop_when_idle=5.0)

        asyncio.run(drain())
        console.print(f"worker drained the topics in {time.monotonic() - began:.1f}s")
        console.rule("3. verify against the simulator's truth")
        code = verify(demo, truth)
        console.rule("4. KPIs")
        _print_kpis(console, demo)
        return code
    finally:
        if started_kafka:
            subprocess.run(["bash", str(_KAFKA_SCRIPT), "stop"], check=False)
