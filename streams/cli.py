"""``socialroi``: the command line, and the composition root.

With ``streams.run``, ``streams.demo`` and ``streams.bench`` it is the composition root:
the only modules of ``streams`` (Kafka) that import ``sinks`` (ClickHouse), to wire them
together (``tests/unit/test_boundaries.py``); everything else meets through
``pipeline.ports``. Settings are built once here and passed down.
Expected failures (a service down, a bad file) print one clear line and exit non-zero.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
from dotenv import dotenv_values
from pydantic import ValidationError

from pipeline.settings import (
    DAILY_PERIOD_SECONDS,
    Settings,
    env_reference,
    redact_url,
    unknown_variables,
)

__all__ = ["main"]

log = logging.getLogger("socialroi")


class CliError(Exception):
    """An expected failure: printed as one line, exit code 2."""


def _env_epilog() -> str:
    lines = ["Settings (environment variables; also read from ./.env):"]
    for name, default, description in env_reference():
        lines.append(f"  {name}\n      {description} [default: {default}]")
    return "\n".join(lines)


def _settings() -> Settings:
    names = list(os.environ)
    if Path(".env").is_file():  # the file Settings reads too
        names += list(dotenv_values(".env"))
    problems = unknown_variables(names)
    if problems:
        raise CliError("unknown settings: " + "; ".join(problems))
    try:
        return Settings()
    except ValidationError as exc:
        raise CliError(f"invalid settings: {_one_line(exc)}") from exc


def _one_line(exc: ValidationError) -> str:
    """Pydantic's errors as one line: ``section.field: message; ...``."""
    problems = []
    for error in exc.errors():
        where = ".".join(map(str, error["loc"]))
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


def _report_period(settings: Settings) -> int:
    """The report period (one-day windows), or a clear error when this store has none."""
    period = settings.windows.report_period_seconds
    if not period:
        raise CliError(
            "SOCIALROI_WINDOWS__REPORT_PERIOD_SECONDS is 0 (no reports read this store): the "
            f"reports read the one-day windows; set it to {DAILY_PERIOD_SECONDS}, with "
            f"{DAILY_PERIOD_SECONDS} among SOCIALROI_WINDOWS__TUMBLING_SECONDS"
        )
    return period


def _setup_logging(settings: Settings) -> None:
    from streams.logs import configure

    configure(
        settings.log.level,
        settings.log.json_logs,
        settings.log.repeat_summary_seconds,
        settings.log.repeat_quiet_seconds,
    )


# -- commands ------------------------------------------------------------------------------


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    """Print the effective settings, secrets redacted."""
    data = settings.model_dump(mode="json")
    data["clickhouse"]["url"] = redact_url(settings.clickhouse.url.get_secret_value())
    for section, key in (("kafka", "sasl_password"), ("collector", "token")):
        if data[section][key] is not None:
            data[section][key] = "***"
    print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from streams.producer import ensure_topics

    ensure_topics(settings)
    print("topics ready")
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from sinks import apply_migrations, connected
    from sinks.retention import prune_raw_events

    if args.new is not None:
        from sinks.view_ddl import write_new_migration

        path = write_new_migration(args.new)
        print(f"wrote {path}: review it, then run `socialroi migrate`")
        return 0
    with connected(settings.clickhouse.url.get_secret_value()) as backend:
        applied = apply_migrations(backend)
        pruned = prune_raw_events(backend, settings.clickhouse.raw_retention_days, time.time())
    print(f"migrations applied: {len(applied)} new; raw archive months dropped: {pruned or 'none'}")
    return 0


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from streams.simulate import run_simulation

    run_simulation(settings, args)
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from streams.replay import run_replay

    return run_replay(
        settings, args.files, rate=args.rate, skip_invalid=args.skip_invalid, dry_run=args.dry_run
    )


def cmd_collect(args: argparse.Namespace, settings: Settings) -> int:
    from streams.run import run_collector

    if settings.collector.token is None or not settings.collector.token.get_secret_value():
        raise CliError(
            "the collector needs a token: set SOCIALROI_COLLECTOR__TOKEN (clients send it "
            "as Authorization: Bearer <token>)"
        )
    run_collector(settings)
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from streams.run import run_worker

    if args.stage is not None:
        worker = settings.worker.model_copy(update={"stage": args.stage})
        settings = settings.model_copy(update={"worker": worker})
    stage, url = settings.worker.stage, settings.clickhouse.url.get_secret_value()
    if stage != "all" and url.startswith("chdb:"):
        raise CliError(
            f"--stage {stage} runs one stage per process, which needs the ClickHouse server "
            "(SOCIALROI_CLICKHOUSE__URL=clickhouse://...): chDB keeps its store in one process"
        )
    run_worker(settings, stop_when_idle=args.stop_when_idle)
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from streams.run import verify

    return verify(settings, args.truth)


# The terminal table's columns, most wanted first: what a board asks about (ROI, money),
# then reach and engagement. ``campaign_id`` always comes first.
TABLE_PRIORITY: tuple[str, ...] = (
    "campaign_id", "spend", "revenue", "roi", "roas", "conversions", "cpa",
    "service_savings", "profit", "engagement_rate", "ctr", "conversion_rate", "impressions",
    "engagements", "clicks", "visits", "follows", "net_follower_growth", "cpc", "cpm",
    "cost_per_engagement", "cost_per_new_follower", "video_views", "view_through_rate",
    "unfollows", "service_resolved", "windows",
)  # fmt: skip


def _column_list(text: str) -> tuple[str, ...]:
    from sinks.views import REPORT_COLUMNS

    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in REPORT_COLUMNS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown column {', '.join(unknown) or '(none given)'}; choose among "
            + ", ".join(REPORT_COLUMNS)
        )
    return names


def table_columns(width: int, rows: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The most wanted columns (``TABLE_PRIORITY``) whose table, as rendered for ``rows``
    (the first 200 stand for all), fits ``width`` characters without cutting a cell; in
    report order."""
    from sinks.views import REPORT_COLUMNS
    from streams.present.report import render

    sample = rows[:200]

    def fits(names: list[str]) -> bool:
        chosen = [name for name in REPORT_COLUMNS if name in names]
        text = render(sample, chosen, "table")
        return "\u2026" not in text and max(map(len, text.splitlines())) <= width

    chosen = [TABLE_PRIORITY[0]]
    for name in TABLE_PRIORITY[1:]:
        if not fits([*chosen, name]):
            break
        chosen.append(name)
    return tuple(name for name in REPORT_COLUMNS if name in chosen)


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from sinks import connected
    from sinks.views import REPORT_COLUMNS, campaign_report
    from streams.present.report import DOCUMENT_FORMATS, render

    start, last = args.from_date, args.to_date
    if start is not None and last is not None and last < start:
        raise CliError(f"--to {last} is before --from {start}")
    if args.window is None or args.format in DOCUMENT_FORMATS:  # documents: daily series
        daily = _report_period(settings)
        args.window = args.window or daily
    if args.format in DOCUMENT_FORMATS:
        return _report_document(args, settings)
    with connected(settings.clickhouse.url.get_secret_value()) as backend:
        rows = campaign_report(
            backend,
            start=start,
            end=last + timedelta(days=1) if last is not None else None,
            window_seconds=args.window,
            campaigns=args.campaign,
            sort=args.sort,
            descending=args.desc,
        )
    period = f"{start or 'first day'} to {last or 'last day'}"
    title = f"Campaign ROI, {period} (windows of {args.window}s)"
    columns = args.columns or REPORT_COLUMNS
    if args.format == "table" and args.columns is None:
        columns = table_columns(shutil.get_terminal_size((120, 24)).columns, rows)
    text = render(rows, columns, args.format, title)
    if args.output is not None:
        args.output.write_text(text if text.endswith("\n") else text + "\n")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if len(columns) < len(REPORT_COLUMNS) and args.columns is None:
        print(
            f"socialroi: {len(REPORT_COLUMNS) - len(columns)} more columns with a wider "
            "terminal, --columns, or --format csv, json or html",
            file=sys.stderr,
        )
    if not rows:
        print(
            f"socialroi: no tumbling windows of {args.window}s in {period} "
            "(is that size in SOCIALROI_WINDOWS__TUMBLING_SECONDS?)",
            file=sys.stderr,
        )
    return 0


def _report_document(args: argparse.Namespace, settings: Settings) -> int:
    """The whole board report (HTML page or its JSON document), see ``sinks.report``."""
    from sinks import connected
    from sinks.report import build_report
    from streams.present.report import render_document

    last = args.to_date
    with connected(settings.clickhouse.url.get_secret_value()) as backend:
        document = build_report(
            backend,
            settings,
            start=args.from_date,
            last=last,
            window_seconds=args.window,
            campaigns=args.campaign,
            sort=args.sort,
            descending=args.desc,
        )
    text = render_document(document, args.format)
    text = text if text.endswith("\n") else text + "\n"
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
        print(f"report written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if not document["campaigns"]:
        print(
            f"socialroi: no tumbling windows of {args.window}s in the period "
            "(is that size in SOCIALROI_WINDOWS__TUMBLING_SECONDS?)",
            file=sys.stderr,
        )
    return 0


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _positive_seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {value}")
    return value


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from streams.demo import run_demo

    _report_period(settings)  # the demo ends with the board report
    return run_demo(settings, events=args.events, seed=args.seed)


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from streams.bench import main as bench_main

    return bench_main(settings, args)


# -- parser --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="socialroi",
        description="Streaming pipeline that proves, in money, what social media brings.",
        epilog=_env_epilog(),
        formatter_class=fmt,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(
        name: str, func: Callable[[argparse.Namespace, Settings], int], text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, help=text, description=text, epilog=_env_epilog(), formatter_class=fmt
        )
        p.set_defaults(func=func)
        return p

    add("config", cmd_config, "Print the effective settings (secrets redacted).")
    add("topics", cmd_topics, "Create the Kafka topics the pipeline uses, if missing.")
    p = add(
        "migrate",
        cmd_migrate,
        "Apply ClickHouse schema migrations (idempotent) and the raw archive's retention.",
    )
    p.add_argument(
        "--new",
        metavar="NAME",
        default=None,
        help="instead, write the next migration file (sinks/migrations/NNNN_NAME.sql): the "
        "counters and views the KPI catalogue (pipeline/kpi.py) adds; applies nothing",
    )

    p = add(
        "simulate", cmd_simulate, "Produce synthetic marketing traffic and write its ground truth."
    )
    p.add_argument("--events", type=int, required=True, help="messages to produce")
    p.add_argument("--seed", type=int, default=1, help="random seed (same seed, same events)")
    p.add_argument("--truth", type=Path, required=True, help="where to write the truth JSON")
    p.add_argument("--rate", type=float, default=None, help="messages per second (default: max)")
    p.add_argument("--campaigns", type=int, default=5, help="number of campaigns")
    p.add_argument("--days", type=int, default=2, help="days of event time to cover")
    p.add_argument(
        "--start",
        default=None,
        help="first day, RFC 3339 (default: midnight UTC, days + 1 days ago, so that "
        "everything lies in the past; give it for the same event times on every run)",
    )

    p = add("replay", cmd_replay, "Validate JSONL or CSV event files, then produce them.")
    p.add_argument("files", nargs="+", type=Path, help="JSONL (.jsonl/.json) or CSV files")
    p.add_argument("--rate", type=float, default=None, help="messages per second")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="send the valid lines even if some are bad (bad ones are reported)",
    )
    p.add_argument("--dry-run", action="store_true", help="validate only; send nothing")

    add(
        "collect",
        cmd_collect,
        "Run the HTTP collector (POST /v1/events with a bearer token) that produces to Kafka.",
    )

    p = add("worker", cmd_worker, "Run the stream worker (Faust) that writes KPIs to ClickHouse.")
    p.add_argument(
        "--stop-when-idle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="exit once every partition is drained and committed and no batch arrived for "
        "this long (batch runs, tests)",
    )
    p.add_argument(
        "--stage",
        choices=("all", "ingest", "aggregate"),
        default=None,
        help="run both stages (all), or one: start one process with ingest and one with "
        "aggregate to use two cores (default: SOCIALROI_WORKER__STAGE, all)",
    )

    p = add("verify", cmd_verify, "Compare ClickHouse with a simulator truth file.")
    p.add_argument("--truth", type=Path, required=True, help="truth JSON from simulate")

    from sinks.views import REPORT_COLUMNS
    from streams.present.report import DOCUMENT_FORMATS, FORMATS

    p = add(
        "report",
        cmd_report,
        "Per-campaign ROI report for a period (ratios from the period's sums), from ClickHouse; "
        "--format html writes the whole board report as one self-contained page, "
        "--format report-json the same data as one JSON document.",
    )
    p.add_argument(
        "--from", dest="from_date", type=_day, default=None, metavar="YYYY-MM-DD",
        help="first day (UTC), inclusive (default: the first stored)",
    )  # fmt: skip
    p.add_argument(
        "--to", dest="to_date", type=_day, default=None, metavar="YYYY-MM-DD",
        help="last day (UTC), inclusive (default: the last stored)",
    )  # fmt: skip
    p.add_argument(
        "--window", type=_positive_seconds, default=None, metavar="SECONDS",
        help="tumbling window size to total (default: SOCIALROI_WINDOWS__REPORT_PERIOD_SECONDS, "
        "one-day windows)",
    )  # fmt: skip
    p.add_argument(
        "--campaign", action="append", default=None, metavar="ID",
        help="only this campaign (repeat for several; default: all)",
    )  # fmt: skip
    p.add_argument(
        "--sort", choices=REPORT_COLUMNS, default="campaign_id", metavar="COLUMN",
        help=f"sort by this column (NULLs last): {', '.join(REPORT_COLUMNS)}",
    )  # fmt: skip
    p.add_argument("--desc", action="store_true", help="sort in descending order")
    p.add_argument(
        "--format", choices=(*FORMATS, *DOCUMENT_FORMATS), default="table",
        help="table, csv, json: the per-campaign table; html: the whole board report "
        "(one offline page); report-json: the whole report's data",
    )  # fmt: skip
    p.add_argument(
        "--columns", type=_column_list, default=None, metavar="COL,COL,...",
        help="the columns of table, csv and json (default: all for csv and json; for the "
        "table, those that fit the terminal, ROI and money first): "
        f"{', '.join(REPORT_COLUMNS)}",
    )  # fmt: skip
    p.add_argument("--output", type=Path, default=None, metavar="FILE", help="write to FILE")

    p = add(
        "demo",
        cmd_demo,
        "Run the whole pipeline on the embedded default and print KPIs per campaign.",
    )
    p.add_argument("--events", type=int, default=20000, help="messages to simulate")
    p.add_argument("--seed", type=int, default=7, help="random seed")

    from streams.bench import add_arguments as bench_arguments

    p = add(
        "bench",
        cmd_bench,
        "Measure producer, worker and raw-consumer throughput, freshness and memory against "
        "the local broker (figures are noisy: medians of --repeat runs); --soak: one long "
        "run at a steady rate, PASS when the worker holds a steady state.",
    )
    bench_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings()
        _setup_logging(settings)
        code: int = args.func(args, settings)
    except CliError as exc:
        print(f"socialroi: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("socialroi: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        message = _expected_failure(exc)
        if message is None:
            raise
        print(f"socialroi: {message}", file=sys.stderr)
        return 2
    return code


# ClickHouse's UNKNOWN_TABLE and UNKNOWN_DATABASE: a store `socialroi migrate` never set up.
_NOT_MIGRATED = frozenset({60, 81})


def _expected_failure(exc: Exception) -> str | None:
    """One line for failures a user can act on; ``None`` for bugs (traceback shown)."""
    from pipeline.money import RatesError
    from sinks import QueryError, SinkError
    from streams.producer import KafkaUnavailable, TopicMisconfigured

    if isinstance(exc, QueryError) and exc.code in _NOT_MIGRATED:
        first = str(exc).splitlines()[0][:300]
        return f"the store has no socialroi schema yet: run `socialroi migrate` first ({first})"
    if isinstance(exc, KafkaUnavailable | TopicMisconfigured | SinkError | RatesError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return None


if __name__ == "__main__":
    sys.exit(main())
