"""``socialroi bench``: how fast the pipeline is, and what it costs in memory, on this machine.

For every setup (campaign count x window set) and every repeat, on fresh topics, a fresh
consumer group and a fresh ClickHouse store:

1. producer: the simulator's messages are generated first and the producer learns the
   topics' partitions, then ``EventProducer.send_all`` plus the final flush are timed (the
   ``socialroi simulate`` path, generation and connection excluded);
2. raw ceiling: a bare aiokafka consumer (no group) reads and ``orjson``-decodes the same
   messages, timed from its first fetch request to the last message;
3. worker drain: ``python -m streams.cli worker`` runs as a subprocess (its own memory and
   interpreter) with ``/metrics`` on a free port, scraped every 200 ms (every 50 ms, the
   scrapes took a sixth of the worker's CPU). The drain runs from the first scrape showing
   ingest consumption (the one before, if that scrape already shows the end) until the
   scrape where (a) the ingest
   stage's finished batches hold all N messages and (b) the aggregate stage's finished
   batches hold every message of the repartition topic. A batch counts as finished only
   after its ClickHouse write returned, so (b) means every KPI snapshot is in ClickHouse.
   Start-up (interpreter, Faust, group join) is reported apart;
4. memory: the worker's peak RSS (``VmHWM``) at that moment, and the live keys of its
   ``kpi-windows`` table read back from the table's changelog topic, with the JSON bytes
   of counters + offsets and of the reach sketch per (campaign, channel, window) key;
5. freshness (with the first setup's windows, once per repeat): a fresh worker on empty
   fresh topics, once it holds its partitions, gets ``--rate`` events/s of one campaign for
   ``--freshness-seconds``, each stamped with ``event_time`` = the wall clock when handed
   to the producer (steady state: no backlog or history in front of them). The worker's gauge
   ``socialroi_last_write_event_time_seconds`` (newest event time whose effect is in
   ClickHouse, set after the write returned) is scraped every 50 ms; an event's latency is
   the first scrape at which the gauge reached its stamp. The gauge is the newest of a
   batch, so an older event of another partition may still be in flight: p99 slightly
   flatters; the 50 ms scrape period adds up to 50 ms. The first second is warm-up and is
   left out; the p50 of the last second shows whether the worker kept up (a growing
   backlog makes it far larger than the p50).

``--processes 2`` runs the worker as two processes, ``--stage ingest`` and ``--stage
aggregate`` (two consumer groups, one stage each, on two cores), each scraped on its own
port: the drain starts at the ingest process's first consumed event and ends when the
aggregate process has handled every repartitioned message; peak RSS is their sum.

Figures are medians over ``--repeat`` runs. They are noisy on a shared 2-core machine:
compare runs of the same command, not single numbers.

``--soak`` runs none of the above but one long run at a steady rate over days of event
time, and says whether the worker held a steady state (``streams.bench_soak``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from pipeline.settings import Settings
from pipeline.simulator import DEFAULT_START, SimMessage, simulate
from streams.bench_probes import (
    end_offsets,
    end_offsets_total,
    fresh_events,
    latencies,
    raw_consume,
    table_state_size,
)
from streams.bench_workers import (
    DEFAULT_SERVER_URL,
    BenchError,
    Scraper,
    Stages,
    WindowSet,
    free_port,
)
from streams.producer import (
    EventProducer,
    OutgoingMessage,
    by_campaign_topic,
    delete_topics,
    ensure_topics,
    topic_for_kind,
)
from streams.simulate import config_from

__all__ = ["NOISE_NOTE", "add_arguments", "fresh_run", "parse_windows", "run_bench"]

NOISE_NOTE = (
    "Figures are noisy (shared 2-core machine, other processes running): medians of "
    "--repeat runs; compare runs of the same command, not single numbers."
)
# Freshness needs fine scrape steps (the drain's are in ``streams.bench_workers``).
FRESHNESS_SCRAPE_SECONDS = 0.05


def parse_windows(text: str) -> WindowSet:
    """``default`` or a comma list of tumbling sizes ``N`` and hopping ``SIZExSTEP`` (seconds):
    ``60`` is one-minute tumbling only; ``60,3600,86400,86400x3600,604800x86400`` the default."""
    text = text.strip()
    if text == "default":
        return WindowSet("default", None, None)
    tumbling: list[int] = []
    hopping: list[tuple[int, int]] = []
    try:
        for item in text.split(","):
            if "x" in item:
                size, step = item.split("x")
                hopping.append((int(size), int(step)))
            else:
                tumbling.append(int(item))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a window set: {text!r} (e.g. default, 60, 60,3600,86400x3600)"
        ) from None
    if (not tumbling and not hopping) or any(
        v <= 0 for v in tumbling + [x for h in hopping for x in h]
    ):
        raise argparse.ArgumentTypeError(f"not a window set: {text!r}")
    return WindowSet(text, tuple(tumbling), tuple(hopping))


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma list of integers: {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"need positive integers: {text!r}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=int, default=10_000, help="messages per run (default 10000)")
    p.add_argument("--repeat", type=int, default=3, help="runs per setup; medians are shown")
    p.add_argument(
        "--campaigns", type=_int_list, default=None, metavar="N[,N...]",
        help="campaign counts to compare (default 10,1000; e.g. 10,1000,10000); "
        "with --soak one count (default 1000)",
    )  # fmt: skip
    p.add_argument(
        "--windows", type=parse_windows, action="append", default=None, metavar="SET",
        help="window set to compare, repeatable: 'default' (the settings' windows) or a comma "
        "list of tumbling N and hopping SIZExSTEP seconds, e.g. 60 (default: default and 60)",
    )  # fmt: skip
    p.add_argument("--backend", choices=("chdb", "server"), default="chdb",
                   help="ClickHouse for the worker: embedded chDB in a temp dir, or the server "
                   "of SOCIALROI_CLICKHOUSE__URL (a clickhouse:// URL) or "
                   f"{DEFAULT_SERVER_URL}, in a fresh database dropped afterwards")  # fmt: skip
    p.add_argument(
        "--processes", type=_int_list, default=[1], metavar="N[,N...]",
        help="worker processes to compare: 1 (both stages in one) and/or 2 (ingest and "
        "aggregate each in its own; needs --backend server) (default 1)",
    )  # fmt: skip
    p.add_argument("--rate", type=float, default=2000.0, help="freshness input rate, events/s")
    p.add_argument(
        "--freshness-seconds", type=float, default=10.0, metavar="S",
        help="how long to produce at --rate for freshness (0: skip)",
    )  # fmt: skip
    p.add_argument("--days", type=int, default=2, help="days of simulated event time")
    p.add_argument("--seed", type=int, default=1, help="simulator seed")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    from streams.bench_soak import MAX_LAG_SECONDS, MAX_RSS_GROWTH  # it imports this module

    soak = p.add_argument_group(
        "soak",
        "--soak: one worker fed a steady rate for minutes, with days of event time, to show "
        "a steady state: per minute the input, the worker's throughput, lag and RSS; PASS "
        f"(exit 0) when the lag at the end is under {MAX_LAG_SECONDS:g} s of input and RSS "
        f"grew under {MAX_RSS_GROWTH:.0%} over the last third, else FAIL (exit 1). Uses "
        "--campaigns (one count), --windows (one set), --backend, --seed, --json",
    )
    soak.add_argument("--soak", action="store_true", help="run the soak instead of the bench")
    soak.add_argument("--soak-rate", type=float, default=10_000.0, metavar="EV/S",
                      help="input rate, events/s (default 10000)")  # fmt: skip
    soak.add_argument("--soak-minutes", type=float, default=10.0, metavar="M",
                      help="how long to produce (default 10)")  # fmt: skip
    soak.add_argument("--soak-days", type=int, default=None, metavar="D",
                      help="days of event time over those minutes (default: twice the "
                      "longest window or attribution lookback, 14 with the defaults, so "
                      "state is full and settled before the last third)")  # fmt: skip


# -- one run -------------------------------------------------------------------------------


def _run_settings(base: Settings, run_id: str, port: int, url: str, data_dir: Path) -> Settings:
    names = ("social", "web", "costs", "campaigns", "dead_letters", "late")
    topics = base.topics.model_copy(update={n: f"bench-{run_id}.{n}" for n in names})
    return base.model_copy(
        update={
            "topics": topics,
            "worker": base.worker.model_copy(
                update={"app_id": f"bench-{run_id}", "data_dir": data_dir}
            ),
            "clickhouse": base.clickhouse.model_copy(
                update={"url": type(base.clickhouse.url)(url)}
            ),
            "metrics": base.metrics.model_copy(update={"port": port, "host": "127.0.0.1"}),
        }
    )


def _fresh_url(backend: str, run_dir: Path, run_id: str) -> str:
    if backend == "chdb":
        return f"chdb://{run_dir / 'chdb'}"
    url = os.environ.get("SOCIALROI_CLICKHOUSE__URL", DEFAULT_SERVER_URL)
    if not url.startswith(("clickhouse://", "clickhouses://")):
        raise BenchError(f"--backend server needs a clickhouse:// URL, not {url.split(':')[0]}://")
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/bench_{run_id}", parts.query, ""))


def _drop_database(url: str) -> None:
    from sinks import connected, parse_store_url

    database = parse_store_url(url).database
    try:
        with connected(url) as backend:
            backend.execute(f"DROP DATABASE IF EXISTS {database}")
    except Exception as exc:  # cleanup only: say so, never fail the figures for it
        print(f"bench: could not drop {database}: {exc}", file=sys.stderr)


@contextmanager
def fresh_run(base: Settings, backend: str) -> Iterator[tuple[Settings, Path]]:
    """Settings and a directory for one run on its own topics, group and store, all created
    here (topics included) and removed afterwards."""
    run_id = uuid.uuid4().hex[:8]
    run_dir = Path(tempfile.mkdtemp(prefix=f"socialroi-bench-{run_id}-"))
    url = _fresh_url(backend, run_dir, run_id)
    s = _run_settings(base, run_id, free_port(), url, run_dir / "worker")
    try:
        ensure_topics(s)
        yield s, run_dir
    finally:
        try:
            delete_topics(s, f"bench-{run_id}")
        except Exception as exc:  # cleanup only
            print(f"bench: could not delete topics bench-{run_id}*: {exc}", file=sys.stderr)
        if backend == "server":
            _drop_database(url)
        shutil.rmtree(run_dir, ignore_errors=True)


def one_run(
    base: Settings,
    messages: list[SimMessage],
    windows: WindowSet,
    backend: str,
    processes: int = 1,
) -> dict[str, Any]:
    """One repeat of one setup, on fresh topics, group and store; returns its raw figures."""
    result: dict[str, Any] = {}
    with fresh_run(base, backend) as (s, run_dir):
        topics = topic_for_kind(s)
        outgoing = [OutgoingMessage(topics[m.kind], m.key, m.value, m.partition) for m in messages]
        n = len(outgoing)

        producer = EventProducer(s, client_id="socialroi-bench")
        producer.start(topics.values())
        try:
            began = time.perf_counter()
            producer.send_all(outgoing)
            producer.flush()
            result["producer_seconds"] = time.perf_counter() - began
        finally:
            producer.close()

        result["raw_seconds"] = raw_consume(s, list(topics.values()), n)

        workers = Stages(s, windows, run_dir, processes)
        try:
            result |= _drain(workers, s, n)
            result["peak_rss_bytes"] = workers.peak_rss_bytes()
            changelog = f"{s.worker.app_id}-kpi-windows-changelog"
            state_ends = end_offsets(s, changelog)
        finally:
            workers.stop()
        size = table_state_size(s, changelog, state_ends)
        result["state"] = {
            "active_keys": size.keys,
            "value_bytes": size.value_bytes,
            "counters_offsets_bytes": size.counters_offsets_bytes,
            "reach_bytes": size.reach_bytes,
            "keys_with_reach": size.keys_with_reach,
        }
        result["events"] = n
        return result


def freshness_run(
    base: Settings, windows: WindowSet, backend: str, rate: float, seconds: float
) -> dict[str, Any]:
    """A worker on empty fresh topics, fed ``rate`` events/s of one campaign for ``seconds``
    once it holds its partitions: steady state, no backlog or history in front."""
    with fresh_run(base, backend) as (s, run_dir):
        worker = Stages(s, windows, run_dir, 1, scrape_every=FRESHNESS_SCRAPE_SECONDS)
        scraper = worker.scraper("all")
        try:

            def assigned() -> bool:
                last = scraper.last()
                return last is not None and last.assigned > 0

            worker.wait_for(assigned, "waiting for the worker to join its group", 120)
            return _freshness(worker, scraper, s, rate, seconds)
        finally:
            worker.stop()


def _drain(workers: Stages, s: Settings, n: int) -> dict[str, Any]:
    ingest, aggregate = workers.scraper("ingest"), workers.scraper("aggregate")

    def consuming() -> bool:
        last = ingest.last()
        return last is not None and last.consumed_ingest > 0

    workers.wait_for(consuming, "waiting for the worker to start consuming", 120)
    first = next(x for x in ingest.scrapes if x.consumed_ingest > 0)

    def ingested() -> bool:
        last = ingest.last()
        return last is not None and last.handled.get("ingest", 0) >= n

    workers.wait_for(ingested, f"waiting for the worker to ingest {n} messages", 600)
    # Stage one awaited every repartitioned message before finishing its last batch.
    repartitioned = end_offsets_total(s, by_campaign_topic(s))

    def aggregated() -> bool:
        last = aggregate.last()
        return last is not None and last.handled.get("aggregate", 0) >= repartitioned

    workers.wait_for(aggregated, f"waiting for {repartitioned} repartitioned messages", 600)
    done = aggregate.last()
    assert done is not None
    began = first.at
    if done is first:
        # The whole drain fell between two scrapes: counted from the scrape before (an
        # upper bound), not as zero seconds.
        index = ingest.scrapes.index(first)
        began = ingest.scrapes[index - 1].at if index else workers.spawned
    return {
        "startup_seconds": first.at - workers.spawned,
        "drain_seconds": done.at - began,
        "repartitioned": repartitioned,
    }


def _freshness(
    worker: Stages, scraper: Scraper, s: Settings, rate: float, seconds: float
) -> dict[str, Any]:
    stamps: list[int] = []
    count = max(1, int(rate * seconds))
    producer = EventProducer(s, client_id="socialroi-bench-freshness")
    producer.start()
    try:
        events = fresh_events(s.topics.social, s.kafka.partitions, "bench-fresh", stamps)
        began = time.monotonic()
        producer.send_all((next(events) for _ in range(count)), rate=rate)
        producer.flush()
        produced_seconds = time.monotonic() - began
    finally:
        producer.close()
    newest = max(stamps) / 1000

    def reached() -> bool:
        last = scraper.last()
        return last is not None and last.freshness >= newest

    worker.wait_for(reached, "waiting for the freshness events to reach ClickHouse", 120)
    warm_up = min(stamps) + 1000
    measured = [t for t in stamps if t >= warm_up] or stamps
    lat = sorted(latencies(measured, list(scraper.scrapes)))
    if not lat:
        raise BenchError("no freshness sample reached ClickHouse")
    tail = sorted(latencies([t for t in stamps if t >= max(stamps) - 1000], scraper.scrapes))
    return {
        "freshness_events": len(measured),
        # far above p50: the backlog grew during the run, the worker did not keep up
        "freshness_last_second_p50_seconds": _quantile(tail, 0.50) if tail else lat[-1],
        "freshness_rate_achieved": count / produced_seconds,
        "freshness_p50_seconds": _quantile(lat, 0.50),
        "freshness_p99_seconds": _quantile(lat, 0.99),
    }


def _quantile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


# -- the whole bench -----------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _figure(values: list[float], unit: str) -> dict[str, Any]:
    return {"median": _median(values), "runs": values, "unit": unit}


def run_bench(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Run every setup ``args.repeat`` times; returns the JSON-ready result."""
    window_sets: list[WindowSet] = args.windows or [parse_windows("default"), parse_windows("60")]
    campaign_counts: list[int] = args.campaigns or [10, 1000]
    if args.events < 100 or args.repeat < 1:
        raise BenchError("--events must be >= 100 and --repeat >= 1")
    if not set(args.processes) <= {1, 2}:
        raise BenchError("--processes takes 1 and/or 2")
    if 2 in args.processes and args.backend != "server":
        raise BenchError("--processes 2 needs --backend server (chDB: one process per store)")
    setups = []
    freshness_runs: list[dict[str, Any]] = []
    first = True
    for campaigns in campaign_counts:
        cfg = config_from(settings, args.events, args.seed, campaigns, args.days, DEFAULT_START)
        messages, _truth = simulate(cfg)
        for windows, processes in itertools.product(window_sets, args.processes):
            setup = {
                "events": len(messages),
                "campaigns": campaigns,
                "days": args.days,
                "windows": windows.name,
                "window_specs": windows.describe(settings),
                "backend": args.backend,
                "processes": processes,
                "partitions": settings.kafka.partitions,
                "batch_max_events": settings.worker.batch_max_events,
                "batch_within_seconds": settings.worker.batch_within_seconds,
            }
            runs = []
            for repeat in range(args.repeat):
                _progress(args, f"{_label(setup)}: run {repeat + 1}/{args.repeat}")
                runs.append(one_run(settings, messages, windows, args.backend, processes))
                if first and args.freshness_seconds > 0:
                    _progress(args, f"freshness, windows {windows.name}: run {repeat + 1}")
                    freshness_runs.append(
                        freshness_run(
                            settings, windows, args.backend, args.rate, args.freshness_seconds
                        )
                    )
            first = False
            setups.append(_summarise(setup, runs))
    result: dict[str, Any] = {
        "note": NOISE_NOTE,
        "command": "socialroi " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "host": {
            "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(),
            "python": sys.version.split()[0],
        },
        "setups": setups,
        "freshness": None,
    }
    if freshness_runs:
        base = {k: v for k, v in setups[0]["setup"].items() if k not in ("events", "days")}
        base["campaigns"] = 1
        result["freshness"] = {
            "setup": {
                **base,
                "rate": args.rate,
                "seconds": args.freshness_seconds,
                "method": "fresh worker on empty topics, one campaign's like events with "
                "event_time = production wall clock; latency = first 50 ms scrape of "
                "socialroi_last_write_event_time_seconds >= it; first second left out",
            },
            "p50_seconds": _figure([r["freshness_p50_seconds"] for r in freshness_runs], "s"),
            "p99_seconds": _figure([r["freshness_p99_seconds"] for r in freshness_runs], "s"),
            "last_second_p50_seconds": _figure(
                [r["freshness_last_second_p50_seconds"] for r in freshness_runs], "s"
            ),
            "rate_achieved": _figure(
                [r["freshness_rate_achieved"] for r in freshness_runs], "events/s"
            ),
            "events_measured": _figure(
                [float(r["freshness_events"]) for r in freshness_runs], "events"
            ),
        }
    return result


def _label(setup: dict[str, Any]) -> str:
    return (
        f"{setup['events']} events, {setup['campaigns']} campaigns, windows {setup['windows']}, "
        f"{setup['processes']} process(es)"
    )


def _progress(args: argparse.Namespace, text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def _summarise(setup: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    n = setup["events"]
    producer = [n / r["producer_seconds"] for r in runs]
    raw = [n / r["raw_seconds"] for r in runs]
    worker = [n / r["drain_seconds"] for r in runs]
    state = runs[-1]["state"]  # same input, same windows: identical in every run
    keys = state["active_keys"]
    per_key = {
        "active_keys": keys,
        "bytes_per_key": state["value_bytes"] / keys if keys else 0.0,
        "counters_offsets_bytes_per_key": state["counters_offsets_bytes"] / keys if keys else 0.0,
        "reach_bytes_per_key_with_reach": (
            state["reach_bytes"] / state["keys_with_reach"] if state["keys_with_reach"] else 0.0
        ),
        "keys_with_reach": state["keys_with_reach"],
        "total_state_bytes": state["value_bytes"],
    }
    producer_fig = _figure(producer, "events/s")
    raw_fig = _figure(raw, "events/s")
    worker_fig = _figure(worker, "events/s")
    return {
        "setup": setup,
        "repeats": len(runs),
        "producer_events_per_s": producer_fig,
        "raw_consume_events_per_s": raw_fig,
        "worker_drain_events_per_s": worker_fig,
        "worker_vs_raw": worker_fig["median"] / raw_fig["median"],
        "worker_startup_seconds": _figure([r["startup_seconds"] for r in runs], "s"),
        "worker_peak_rss_bytes": _figure([float(r["peak_rss_bytes"]) for r in runs], "bytes"),
        "repartitioned_messages": runs[-1]["repartitioned"],
        "state": per_key,
    }


def main(settings: Settings, args: argparse.Namespace) -> int:
    """The drain bench, or with ``--soak`` the soak (exit 1 when its verdict is FAIL)."""
    import streams.present.bench_render as rendering

    if args.soak:
        from streams.bench_soak import run_soak  # it builds on this module

        run, render = run_soak, rendering.render_soak
    else:
        run, render = run_bench, rendering.render
    try:
        result = run(settings, args)
    except BenchError as exc:
        print(f"socialroi: bench: {exc}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        render(result)
    return 1 if args.soak and not result["verdict"]["passed"] else 0
