"""Exactly-once effect under crashes: the worker is killed with SIGKILL at random moments
and restarted; a second worker shares the partitions and is killed too. ClickHouse still
equals the simulator's truth: nothing lost, nothing counted twice."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import orjson
import pytest

pytestmark = pytest.mark.integration
Run = Callable[..., CompletedProcess[str]]
WORKER = [sys.executable, "-m", "streams.cli", "worker"]


def start_worker(
    env: dict[str, str], log: Path, idle: float | None = None, stage: str = "all"
) -> subprocess.Popen[bytes]:
    args = [*WORKER, "--stage", stage] + (["--stop-when-idle", str(idle)] if idle else [])
    handle = log.open("ab")
    return subprocess.Popen(args, env=env, stdout=handle, stderr=subprocess.STDOUT,
                            cwd=log.parent)


def consumed_lines(log: Path) -> int:
    return log.read_text(errors="replace").count("\n") if log.exists() else 0


def simulate(socialroi: Run, env: dict[str, str], truth: Path, events: int) -> dict:
    result = socialroi(env, "simulate", "--events", str(events), "--seed", "21", "--days", "30",
                       "--campaigns", "8", "--truth", str(truth))
    assert result.returncode == 0, result.stderr[-2000:]
    return orjson.loads(truth.read_bytes())


def finish_and_verify(socialroi: Run, env: dict[str, str], truth: Path, log: Path) -> str:
    final = start_worker(env, log, idle=15)
    assert final.wait(timeout=900) == 0, log.read_text(errors="replace")[-3000:]
    result = socialroi(env, "verify", "--truth", str(truth))
    assert result.returncode == 0, result.stdout[:3000] + result.stderr[-2000:]
    return result.stdout


@pytest.fixture
def crash_env(pipeline_env: dict[str, str], fresh_server_url: str, tmp_path: Path
              ) -> dict[str, str]:
    rates = tmp_path / "rates.csv"
    rates.write_text("currency,rate\nUSD,0.92\nGBP,1.17\n")
    return {**pipeline_env, "SOCIALROI_CLICKHOUSE__URL": fresh_server_url,
            "SOCIALROI_COSTS__RATES_FILE": str(rates)}


@pytest.mark.timeout(1500)
def test_sigkill_three_times_then_verify(socialroi: Run, crash_env: dict[str, str],
                                        tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.json"
    truth = simulate(socialroi, crash_env, truth_path, 60_000)
    assert truth["late"] > 0 and truth["duplicates"] > 0
    log = tmp_path / "worker.log"
    rng = random.Random(os.getpid())
    kills = 0
    for _ in range(3):
        worker = start_worker(crash_env, log)
        time.sleep(rng.uniform(6, 14))  # recovery, rebalance, then some batches
        assert worker.poll() is None, log.read_text(errors="replace")[-3000:]
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        kills += 1
    out = finish_and_verify(socialroi, crash_env, truth_path, log)
    assert kills == 3
    assert "equals the truth" in out


@pytest.mark.timeout(1500)
def test_two_workers_one_killed_and_restarted(socialroi: Run, crash_env: dict[str, str],
                                              tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.json"
    simulate(socialroi, crash_env, truth_path, 60_000)
    log_a, log_b = tmp_path / "a" / "worker.log", tmp_path / "b" / "worker.log"
    for log in (log_a, log_b):
        log.parent.mkdir()
    env_b = {**crash_env, "SOCIALROI_WORKER__DATA_DIR": str(log_b.parent / "state")}
    a = start_worker(crash_env, log_a, idle=20)
    b = start_worker(env_b, log_b)
    time.sleep(12)
    assert b.poll() is None, log_b.read_text(errors="replace")[-3000:]
    b.send_signal(signal.SIGKILL)
    b.wait()
    time.sleep(3)
    b = start_worker(env_b, log_b, idle=20)
    assert a.wait(timeout=900) == 0, log_a.read_text(errors="replace")[-3000:]
    assert b.wait(timeout=900) == 0, log_b.read_text(errors="replace")[-3000:]
    result = socialroi(crash_env, "verify", "--truth", str(truth_path))
    assert result.returncode == 0, result.stdout[:3000]


@pytest.mark.timeout(1500)
def test_a_second_worker_joins_mid_drain(socialroi: Run, crash_env: dict[str, str],
                                         tmp_path: Path) -> None:
    """Partitions move between two live workers (neither is killed): the first gives up
    half of its partitions, with their state, to a worker that starts while it drains."""
    truth_path = tmp_path / "truth.json"
    simulate(socialroi, crash_env, truth_path, 60_000)
    log_a, log_b = tmp_path / "a" / "worker.log", tmp_path / "b" / "worker.log"
    for log in (log_a, log_b):
        log.parent.mkdir()
    env_b = {**crash_env, "SOCIALROI_WORKER__DATA_DIR": str(log_b.parent / "state")}
    a = start_worker(crash_env, log_a, idle=20)
    time.sleep(10)
    assert a.poll() is None, log_a.read_text(errors="replace")[-3000:]
    b = start_worker(env_b, log_b, idle=20)
    assert a.wait(timeout=900) == 0, log_a.read_text(errors="replace")[-3000:]
    assert b.wait(timeout=900) == 0, log_b.read_text(errors="replace")[-3000:]
    # the joiner did part of the drain (the worker's last line counts its batches)
    batches = re.search(r"after (\d+) batches", log_b.read_text(errors="replace"))
    assert batches is not None and int(batches[1]) > 0, log_b.read_text()[-3000:]
    result = socialroi(crash_env, "verify", "--truth", str(truth_path))
    assert result.returncode == 0, result.stdout[:3000]


@pytest.mark.timeout(1500)
def test_a_restart_after_sigterm_carries_on(socialroi: Run, crash_env: dict[str, str],
                                            tmp_path: Path) -> None:
    """A clean stop mid-drain (SIGTERM), then a restart: the second run takes its
    partitions back and finishes; nothing lost, nothing counted twice."""
    truth_path = tmp_path / "truth.json"
    simulate(socialroi, crash_env, truth_path, 60_000)
    log = tmp_path / "worker.log"
    worker = start_worker(crash_env, log)
    time.sleep(12)
    assert worker.poll() is None, log.read_text(errors="replace")[-3000:]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=120) == 0, log.read_text(errors="replace")[-3000:]
    out = finish_and_verify(socialroi, crash_env, truth_path, log)
    assert "equals the truth" in out


@pytest.mark.timeout(1500)
def test_stages_in_two_processes_take_over_and_survive_a_kill(
        socialroi: Run, crash_env: dict[str, str], tmp_path: Path) -> None:
    """One process runs both stages, is killed; then each stage runs in its own process
    (its own consumer group) from the state the first left in the changelogs, and the
    aggregate process is killed and restarted too: nothing lost, nothing counted twice."""
    truth_path = tmp_path / "truth.json"
    simulate(socialroi, crash_env, truth_path, 60_000)
    logs = {name: tmp_path / name / "worker.log" for name in ("all", "ingest", "aggregate")}
    for log in logs.values():
        log.parent.mkdir()
    both = start_worker(crash_env, logs["all"])
    time.sleep(10)
    assert both.poll() is None, logs["all"].read_text(errors="replace")[-3000:]
    both.send_signal(signal.SIGKILL)
    both.wait()
    ingest = start_worker(crash_env, logs["ingest"], idle=20, stage="ingest")
    aggregate = start_worker(crash_env, logs["aggregate"], stage="aggregate")
    time.sleep(8)
    assert aggregate.poll() is None, logs["aggregate"].read_text(errors="replace")[-3000:]
    aggregate.send_signal(signal.SIGKILL)
    aggregate.wait()
    aggregate = start_worker(crash_env, logs["aggregate"], idle=20, stage="aggregate")
    for name, proc in (("ingest", ingest), ("aggregate", aggregate)):
        assert proc.wait(timeout=900) == 0, logs[name].read_text(errors="replace")[-3000:]
        batches = re.search(r"after (\d+) batches", logs[name].read_text(errors="replace"))
        assert batches is not None and int(batches[1]) > 0, logs[name].read_text()[-3000:]
    result = socialroi(crash_env, "verify", "--truth", str(truth_path))
    assert result.returncode == 0, result.stdout[:3000]
