"""``socialroi demo``: the whole pipeline on the embedded default, end to end.

Starts the local Kafka broker if none answers, simulates traffic (a progress bar counts the
messages produced), runs the worker into embedded ClickHouse (chDB) until it has drained
(a progress bar counts the messages it consumed, and a live table shows KPIs per campaign
from the snapshots the worker writes: chDB allows one open store per process and the
worker's sink holds it), verifies against the truth, prints KPIs per campaign, writes the
board report (``report.html`` and its ``report.json``) next to the store, and stops what it
started. Ctrl-C stops the worker cleanly, then the broker if the demo started it. Each run
uses its own topics and store, so runs never see each other's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.campaigns import declare, newest_records
from pipeline.kpi import MICROS, ratios, sum_value
from pipeline.ports import CampaignRow, ForwardingSink, KpiSnapshot
from pipeline.settings import Settings
from pipeline.simulator import simulate
from sinks import ClickHouseSink, connected, kpi_rows
from sinks.report import build_report
from streams.metrics import Metrics
from streams.present.report import render_document
from streams.producer import EventProducer, OutgoingMessage, ensure_topics, topic_for_kind
from streams.run import verify, worker_main
from streams.simulate import config_from

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


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _print_kpis(console: Console, settings: Settings) -> None:
    with connected(settings.clickhouse.url.get_secret_value()) as backend:
        rows = kpi_rows(
            backend, window_seconds=settings.windows.report_period_seconds, window_kind="tumbling"
        )
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
        r = ratios(t)
        table.add_row(
            campaign,
            f"{t['impressions']:,}",
            f"{sum_value('engagements', t):,}",
            _share(r["engagement_rate"]),
            f"{t['clicks']:,}",
            _share(r["ctr"]),
            f"{t['visits']:,}",
            f"{sum_value('net_follower_growth', t):+,}",
            "-" if r["net_sentiment"] is None else f"{r['net_sentiment']:+.2f}",
            f"{sum_value('spend_micros', t) / MICROS:,.2f}",
            f"{t['service_savings_micros'] / MICROS:,.2f}",
        )
    console.print(table)


class _LiveSink(ForwardingSink):
    """The worker's ClickHouse sink, keeping the newest snapshot of every window of the report
    period (one day) in memory for the live table (the store itself cannot be read while the
    worker holds it)."""

    def __init__(self, inner: ClickHouseSink, period_seconds: int) -> None:
        super().__init__(inner)
        self.period_seconds = period_seconds
        self.daily: dict[tuple[str, str, int], KpiSnapshot] = {}
        self.records: list[CampaignRow] = []

    def add_snapshots(self, rows: Sequence[KpiSnapshot]) -> None:
        super().add_snapshots(rows)
        for snap in rows:
            if snap.window_kind != "tumbling" or snap.window_seconds != self.period_seconds:
                continue
            key = (snap.campaign_id, snap.channel, snap.window_start_ms)
            if key not in self.daily or snap.version >= self.daily[key].version:
                self.daily[key] = snap

    def add_campaigns(self, rows: Sequence[CampaignRow]) -> None:
        super().add_campaigns(rows)
        self.records += rows

    def table(self, currency: str) -> Table:
        totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        # per declared campaign, as the views report them (tags, case: pipeline.campaigns)
        windows = {
            (s.campaign_id, s.channel, s.window_kind, s.window_seconds, s.window_start_ms): s
            for s in self.daily.values()
        }
        for snap in declare(windows, newest_records(self.records)).values():
            for name, value in snap.counters.items():
                totals[snap.campaign_id or "(no campaign)"][name] += value
        table = Table(title="Live KPIs per campaign (snapshots written so far)")
        for column in ("campaign", "impressions", "engagements", "visits", "conversions",
                       f"revenue {currency}", f"spend {currency}", "ROI"):  # fmt: skip
            table.add_column(column, justify="left" if column == "campaign" else "right")
        for campaign, t in sorted(totals.items()):
            roi = ratios(t)["roi"]
            table.add_row(
                campaign,
                f"{t['impressions']:,}",
                f"{sum_value('engagements', t):,}",
                f"{t['visits']:,}",
                f"{t['conversion_credit_micros'] / MICROS:,.1f}",
                f"{t['revenue_micros'] / MICROS:,.2f}",
                f"{sum_value('spend_micros', t) / MICROS:,.2f}",
                "-" if roi is None else f"{roi:+.1%}",
            )
        return table


def _consumed(metrics: Metrics) -> int:
    return int(
        sum(
            sample.value
            for family in metrics.registry.collect()
            for sample in family.samples
            if sample.name == "socialroi_events_consumed_total"
            and sample.labels.get("stage") == "ingest"
        )
    )


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("messages"),
        TimeElapsedColumn(),
    )


def _produce(demo: Settings, events: int, seed: int, truth: Path, console: Console) -> int:
    """Simulate and produce with a progress bar; returns how many messages were sent."""
    cfg = config_from(demo, events, seed, 5, 2, None)
    messages, expected = simulate(cfg)
    ensure_topics(demo)
    topics = topic_for_kind(demo)
    producer = EventProducer(demo, client_id="socialroi-demo")
    producer.start()
    progress = _progress()
    task = progress.add_task("produced to Kafka", total=len(messages))

    def counted() -> Iterator[OutgoingMessage]:
        for m in messages:
            yield OutgoingMessage(topics[m.kind], m.key, m.value, m.partition)
            progress.advance(task)

    try:
        with Live(progress, console=console, refresh_per_second=8, transient=False):
            producer.send_all(counted(), rate=None)
        console.line()
    finally:
        producer.close()
    truth.write_bytes(orjson.dumps(expected))
    console.print(
        f"{len(messages):,} messages ({sum(expected['dead_letters'].values())} invalid, "
        f"{expected['late']} late, {expected['duplicates']} duplicates on purpose)"
    )
    return len(messages)


async def _run_worker(demo: Settings, produced: int, console: Console) -> bool:
    """Run the worker until it drained (or Ctrl-C), with progress and live KPIs.

    Returns whether it was interrupted."""
    stop = asyncio.Event()
    interrupted = False
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        nonlocal interrupted
        interrupted = True
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    metrics = Metrics(CollectorRegistry())
    sink = _LiveSink(ClickHouseSink(demo.clickhouse), demo.windows.report_period_seconds)
    progress = _progress()
    task = progress.add_task("consumed by the worker", total=produced)
    currency = demo.costs.base_currency
    try:
        with Live(console=console, refresh_per_second=4) as live:
            worker = asyncio.create_task(
                worker_main(demo, stop, stop_when_idle=5.0, metrics=metrics, sink=sink)
            )
            while not worker.done():
                progress.update(task, completed=min(_consumed(metrics), produced))
                live.update(Group(progress, sink.table(currency)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(worker), timeout=0.5)
            progress.update(task, completed=min(_consumed(metrics), produced))
            live.update(Group(progress, sink.table(currency)))
            await worker
        console.line()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return interrupted


def _write_report(demo: Settings, state: Path) -> Path:
    with connected(demo.clickhouse.url.get_secret_value()) as backend:
        document = build_report(backend, demo)
    html = state / "report.html"
    html.write_text(render_document(document, "html"), encoding="utf-8")
    (state / "report.json").write_text(render_document(document, "report-json") + "\n")
    return html


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
    try:
        if not _answers(demo.kafka.bootstrap_servers):
            console.print("[bold]starting the local Kafka broker[/] (first run downloads it)")
            started_kafka = True  # stop it even if the start is interrupted half way
            subprocess.run(["bash", str(_KAFKA_SCRIPT), "start"], check=True)
        truth = state / "truth.json"
        console.rule("1. simulate")
        produced = _produce(demo, events, seed, truth, console)
        console.rule("2. worker (Kafka -> Faust -> embedded ClickHouse)")
        began = time.monotonic()
        interrupted = asyncio.run(_run_worker(demo, produced, console))
        if interrupted:
            console.print("[bold]interrupted[/]: the worker stopped cleanly")
            return 130
        console.print(f"worker drained the topics in {time.monotonic() - began:.1f}s")
        console.rule("3. verify against the simulator's truth")
        code = verify(demo, truth)
        console.rule("4. KPIs")
        _print_kpis(console, demo)
        console.rule("5. board report")
        html = _write_report(demo, state)
        console.print(f"report: [bold]{html.resolve()}[/] (data: {html.with_suffix('.json')})")
        return code
    finally:
        if started_kafka:
            # The broker must stop even on a second Ctrl-C during its shutdown.
            with contextlib.suppress(KeyboardInterrupt):
                subprocess.run(["bash", str(_KAFKA_SCRIPT), "stop"], check=False)
