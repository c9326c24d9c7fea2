"""``socialroi bench --json`` on the real broker and chDB, tiny sizes: every figure is there,
positive and consistent. No timing assertions: the figures are noisy by nature."""

from __future__ import annotations

import math
from collections.abc import Callable
from subprocess import CompletedProcess
from typing import Any

import orjson

FIGURES = (
    "producer_events_per_s",
    "raw_consume_events_per_s",
    "worker_drain_events_per_s",
    "worker_startup_seconds",
    "worker_peak_rss_bytes",
)


def _check_figure(figure: dict[str, Any], repeats: int) -> None:
    assert len(figure["runs"]) == repeats
    assert all(v > 0 and math.isfinite(v) for v in figure["runs"])
    assert min(figure["runs"]) <= figure["median"] <= max(figure["runs"])
    assert figure["unit"]


def test_bench_json_has_every_figure(
    pipeline_env: dict[str, str], socialroi: Callable[..., CompletedProcess[str]]
) -> None:
    done = socialroi(
        pipeline_env,
        "bench", "--json", "--events", "2000", "--repeat", "1", "--campaigns", "5,20",
        "--windows", "default", "--windows", "60", "--rate", "500",
        "--freshness-seconds", "3", "--backend", "chdb",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = orjson.loads(done.stdout)
    assert "noisy" in result["note"]
    setups = result["setups"]
    assert [(s["setup"]["campaigns"], s["setup"]["windows"]) for s in setups] == [
        (5, "default"),
        (5, "60"),
        (20, "default"),
        (20, "60"),
    ]
    for row in setups:
        setup = row["setup"]
        assert setup["backend"] == "chdb"
        assert setup["partitions"] > 0 and setup["batch_max_events"] > 0
        # the simulator's message count: 2,000 asked, the same number produced and read
        assert setup["events"] == 2000
        for name in FIGURES:
            _check_figure(row[name], 1)
        ratio = (
            row["worker_drain_events_per_s"]["median"] / row["raw_consume_events_per_s"]["median"]
        )
        assert math.isclose(row["worker_vs_raw"], ratio, rel_tol=1e-9)
        # every ingested message yields at least one contribution or heartbeat downstream
        assert row["repartitioned_messages"] > 0
        state = row["state"]
        assert state["active_keys"] > 0
        assert 0 < state["counters_offsets_bytes_per_key"] < state["bytes_per_key"]
        assert 0 < state["keys_with_reach"] <= state["active_keys"]
        assert state["reach_bytes_per_key_with_reach"] > 0
        assert math.isclose(
            state["total_state_bytes"], state["bytes_per_key"] * state["active_keys"]
        )
    by_windows = {(r["setup"]["campaigns"], r["setup"]["windows"]): r for r in setups}
    for campaigns in (5, 20):
        # more windows per event means more live keys and bigger ones
        full, minute = by_windows[(campaigns, "default")], by_windows[(campaigns, "60")]
        assert full["state"]["active_keys"] > minute["state"]["active_keys"]
        assert full["state"]["bytes_per_key"] > minute["state"]["bytes_per_key"]
    fresh = result["freshness"]
    assert fresh["setup"]["rate"] == 500 and fresh["setup"]["windows"] == "default"
    for name in ("p50_seconds", "p99_seconds", "last_second_p50_seconds", "rate_achieved"):
        _check_figure(fresh[name], 1)
    assert fresh["p50_seconds"]["median"] <= fresh["p99_seconds"]["median"]
    assert fresh["events_measured"]["median"] >= 500  # 3 s at 500/s minus the warm-up second
