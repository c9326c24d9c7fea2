"""``socialroi``: the command line, and the composition root.

This is the one module that wires ``streams`` (Kafka) to ``sinks`` (ClickHouse); everything
else meets through ``pipeline.ports``. Settings are built once here and passed down.
Expected failures (a service down, a bad file) print one clear line and exit non-zero.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
from pydantic import ValidationError

from pipeline.settings import Settings, env_reference, redact_url

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
    try:
        return Settings()
    except ValidationError as exc:
        raise CliError(f"invalid settings: {exc}") from exc


def _setup_logging(settings: Settings) -> None:
    from streams.logs import configure

    configure(settings.log.level, settings.log.json_logs)


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
    from sinks import apply_migrations, open_backend

    backend = open_backend(settings.clickhouse.url.get_secret_value())
    backend.start()
    try:
        applied = apply_migrations(backend)
    finally:
        backend.close()
    print(f"migrations applied: {len(applied)} new")
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

    run_collector(settings)
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from streams.run import run_worker

    run_worker(settings, stop_when_idle=args.stop_when_idle)
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from streams.run import verify

    return verify(settings, args.truth)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from streams.demo import run_demo

    return run_demo(settings, events=args.events, seed=args.seed)


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
    add("migrate", cmd_migrate, "Apply ClickHouse schema migrations (idempotent).")

    p = add(
        "simulate", cmd_simulate, "Produce synthetic marketing traffic and write its ground truth."
    )
    p.add_argument("--events", type=int, required=True, help="messages to produce")
    p.add_argument("--seed", type=int, default=1, help="random seed (same seed, same events)")
    p.add_argument("--truth", type=Path, required=True, help="where to write the truth JSON")
    p.add_argument("--rate", type=float, default=None, help="messages per second (default: max)")
    p.add_argument("--campaigns", type=int, default=5, help="number of campaigns")
    p.add_argument("--days", type=int, default=2, help="days of event time to cover")
    p.add_argument("--start", default=None, help="first day, RFC 3339 (default 2026-10-01)")

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
        help="exit once no batch arrived for this long (for batch runs and tests)",
    )

    p = add("verify", cmd_verify, "Compare ClickHouse with a simulator truth file.")
    p.add_argument("--truth", type=Path, required=True, help="truth JSON from simulate")

    p = add(
        "demo",
        cmd_demo,
        "Run the whole pipeline on the embedded default and print KPIs per campaign.",
    )
    p.add_argument("--events", type=int, default=20000, help="messages to simulate")
    p.add_argument("--seed", type=int, default=7, help="random seed")
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


def _expected_failure(exc: Exception) -> str | None:
    """One line for failures a user can act on; ``None`` for bugs (traceback shown)."""
    from pipeline.money import RatesError
    from sinks import SinkError
    from streams.producer import KafkaUnavailable

    if isinstance(exc, KafkaUnavailable | SinkError | RatesError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return None


if __name__ == "__main__":
    sys.exit(main())
