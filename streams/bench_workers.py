"""The worker under a bench: one process, or a process per stage, each scraped on its own
metrics port, and the settings it gets (``WindowSet``). ``streams.bench`` (the drain and
freshness; it also makes each run's topics, group and store, ``fresh_run``) and
``streams.bench_soak`` (the soak) run it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pipeline.settings import DAILY_PERIOD_SECONDS, Settings
from streams.bench_probes import Scrape, peak_rss_bytes, rss_bytes, scrape

__all__ = [
    "DEFAULT_SERVER_URL",
    "DRAIN_SCRAPE_SECONDS",
    "BenchError",
    "Scraper",
    "Stages",
    "WindowSet",
    "free_port",
]

# The drain's scrape period: long next to a 200 ms scrape the drain does not need finer
# steps, and every scrape costs the worker an HTTP request and a metrics page.
DRAIN_SCRAPE_SECONDS = 0.2
# How often a wait on the scrapes looks at the newest one.
_POLL_SECONDS = 0.025
DEFAULT_SERVER_URL = "clickhouse://default@127.0.0.1:19000"
_REPO = Path(__file__).resolve().parents[1]


class BenchError(RuntimeError):
    """The bench could not run (a service down, the worker died); the message says which."""


@dataclass(frozen=True, slots=True)
class WindowSet:
    """Window sizes for one setup; ``name`` as given on the command line."""

    name: str
    tumbling: tuple[int, ...] | None  # None: the settings' own
    hopping: tuple[tuple[int, int], ...] | None

    def describe(self, settings: Settings) -> str:
        tumbling = self.tumbling if self.tumbling is not None else settings.windows.tumbling_seconds
        hopping = self.hopping if self.hopping is not None else settings.windows.hopping
        parts = [f"{s}s" for s in tumbling] + [f"{s}s/{h}s" for s, h in hopping]
        return f"{len(tumbling)} tumbling + {len(hopping)} hopping ({', '.join(parts)})"

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.tumbling is not None:
            env["SOCIALROI_WINDOWS__TUMBLING_SECONDS"] = orjson.dumps(list(self.tumbling)).decode()
            if DAILY_PERIOD_SECONDS not in self.tumbling:  # no report reads a bench's store
                env["SOCIALROI_WINDOWS__REPORT_PERIOD_SECONDS"] = "0"
        if self.hopping is not None:
            env["SOCIALROI_WINDOWS__HOPPING"] = orjson.dumps(
                [list(h) for h in self.hopping]
            ).decode()
        return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _worker_env(s: Settings, windows: WindowSet) -> dict[str, str]:
    # The user's settings pass through; everything the run changes is set explicitly.
    env = dict(os.environ)
    t = s.topics
    env.update(
        {
            "SOCIALROI_KAFKA__BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
            "SOCIALROI_KAFKA__PARTITIONS": str(s.kafka.partitions),
            "SOCIALROI_WORKER__APP_ID": s.worker.app_id,
            "SOCIALROI_WORKER__DATA_DIR": str(s.worker.data_dir),
            "SOCIALROI_METRICS__PORT": str(s.metrics.port),
            "SOCIALROI_METRICS__HOST": s.metrics.host,
            "SOCIALROI_CLICKHOUSE__URL": s.clickhouse.url.get_secret_value(),
            "SOCIALROI_TOPICS__SOCIAL": t.social,
            "SOCIALROI_TOPICS__WEB": t.web,
            "SOCIALROI_TOPICS__COSTS": t.costs,
            "SOCIALROI_TOPICS__CAMPAIGNS": t.campaigns,
            "SOCIALROI_TOPICS__DEAD_LETTERS": t.dead_letters,
            "SOCIALROI_TOPICS__LATE": t.late,
            "SOCIALROI_LOG__LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")])),
        }
    )
    env.update(windows.env())
    return env


class Scraper:
    """Scrapes the worker's /metrics every ``period`` seconds in a thread, keeping every
    answer."""

    def __init__(self, port: int, period: float) -> None:
        self.port = port
        self.period = period
        self.scrapes: list[Scrape] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            s = scrape(self.port)
            if s is not None:
                self.scrapes.append(s)
            self._stop.wait(self.period)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def last(self) -> Scrape | None:
        return self.scrapes[-1] if self.scrapes else None


class _WorkerProcess:
    """``python -m streams.cli worker`` with its log in a file (a pipe could fill and stall it)."""

    def __init__(self, env: dict[str, str], run_dir: Path, stage: str = "all") -> None:
        self.log = run_dir / f"worker-{stage}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker", "--stage", stage],
                env=env,
                cwd=run_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.spawned = time.monotonic()

    def check(self, what: str) -> None:
        """Raises if the worker has exited."""
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise BenchError(f"worker exited ({self.proc.returncode}) while {what}: {tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Stages:
    """The worker as one process running both stages, or two processes (``--stage ingest``
    and ``--stage aggregate``), each scraped on its own metrics port."""

    def __init__(
        self,
        s: Settings,
        windows: WindowSet,
        run_dir: Path,
        processes: int,
        scrape_every: float | None = DRAIN_SCRAPE_SECONDS,
    ) -> None:
        env = _worker_env(s, windows)
        if processes == 1:
            self.ports = {"all": s.metrics.port}
        else:
            self.ports = {"ingest": s.metrics.port, "aggregate": free_port()}
        self.procs = {
            stage: _WorkerProcess({**env, "SOCIALROI_METRICS__PORT": str(port)}, run_dir, stage)
            for stage, port in self.ports.items()
        }
        self.spawned = min(p.spawned for p in self.procs.values())
        self.scrapers = {}
        if scrape_every is not None:
            self.scrapers = {st: Scraper(p, scrape_every) for st, p in self.ports.items()}
            for scraper in self.scrapers.values():
                scraper.start()

    def port(self, stage: str) -> int:
        """The metrics port of the process running ``stage`` (ingest or aggregate)."""
        return self.ports.get(stage) or self.ports["all"]

    def scraper(self, stage: str) -> Scraper:
        """The scraper of the process running ``stage`` (ingest or aggregate)."""
        return self.scrapers.get(stage) or self.scrapers["all"]

    def check(self, what: str) -> None:
        """Raises if a process has exited."""
        for proc in self.procs.values():
            proc.check(what)

    def rss_bytes(self) -> int:
        return sum(rss_bytes(p.proc.pid) for p in self.procs.values())

    def wait_for(self, until: Any, what: str, timeout: float) -> None:
        """Wait until ``until()``; fails when a process exits or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not until():
            self.check(what)
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {timeout:.0f}s {what}")
            time.sleep(_POLL_SECONDS)

    def peak_rss_bytes(self) -> int:
        return sum(peak_rss_bytes(p.proc.pid) for p in self.procs.values())

    def stop(self) -> None:
        for scraper in self.scrapers.values():
            scraper.stop()
        for proc in self.procs.values():
            proc.stop()
