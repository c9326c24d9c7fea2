"""Alert rules checked by promtool, and a real Prometheus scraping a real worker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import yaml
from prometheus_client import CollectorRegistry

from streams.metrics import Metrics
from tests.integration.conftest import ROOT, SOCIALROI
from tests.integration.prometheus_helpers import (
    ALERTS,
    ALERTS_TEST,
    PrivatePrometheus,
    free_port,
    http_get,
    promtool,
)

pytestmark = pytest.mark.integration

Run = Callable[..., subprocess.CompletedProcess[str]]


def exported_names() -> set[str]:
    """Every sample name the pipeline's collectors can export."""
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    for family in Metrics(CollectorRegistry()).registry.collect():
        names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    checked = promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(ALERTS_TEST))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
    }
    firing: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    assert alerts == firing, "alerts never tested firing: " + str(alerts - firing)
    assert alerts == silent, "alerts never tested silent: " + str(alerts - silent)


def test_alert_rules_only_use_metrics_the_pipeline_exports() -> None:
    exported = exported_names()
    used = set(re.findall(r"\bsocialroi_[a-z_]+", ALERTS.read_text()))
    assert used, "no socialroi metric in the alert rules"
    assert used <= exported, f"unknown metrics in alerts.yml: {sorted(used - exported)}"


@pytest.fixture
def worker_process(
    pipeline_env: dict[str, str], fresh_server_url: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], int, dict[str, str]]]:
    """A running `socialroi worker` with its metrics server on a free port."""
    port = free_port()
    env = {
        **pipeline_env,
        "SOCIALROI_METRICS__PORT": str(port),
        "SOCIALROI_CLICKHOUSE__URL": fresh_server_url,
    }
    log = (tmp_path / "worker.log").open("w")
    process = subprocess.Popen(
        [*SOCIALROI, "worker"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield process, port, env
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        log.close()


def _wait_for(
    what: str, condition: Callable[[], bool], timeout: float, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    pytest.fail(f"timed out after {timeout}s waiting for {what}\n{tail}", pytrace=False)


def test_prometheus_scrapes_what_the_worker_consumed_and_dead_lettered(
    worker_process: tuple[subprocess.Popen[str], int, dict[str, str]],
    socialroi: Run,
    tmp_path: Path,
) -> None:
    process, port, env = worker_process
    worker_log = tmp_path / "worker.log"
    base = f"http://127.0.0.1:{port}"

    def serving() -> bool:
        assert process.poll() is None, f"worker exited {process.returncode}"
        try:
            return http_get(f"{base}/healthz", timeout=1)[0] == 200
        except OSError:
            return False

    _wait_for("the worker's /healthz", serving, 120, worker_log)
    prometheus = PrivatePrometheus(tmp_path / "prometheus", [f"127.0.0.1:{port}"])
    prometheus.start()
    try:
        truth_path = tmp_path / "t.json"
        result = socialroi(
            env, "simulate", "--events", "2000", "--seed", "3", "--truth", str(truth_path)
        )
        assert result.returncode == 0, result.stdout + result.stderr
        sent = int(re.search(r"sent (\d+) messages", result.stdout).group(1))  # type: ignore[union-attr]
        assert sent == 2000
        truth = orjson.loads(truth_path.read_bytes())
        dead = sum(truth["dead_letters"].values())
        assert dead > 0, "the simulator should produce some invalid messages"

        consumed = 'sum(socialroi_events_consumed_total{stage="ingest"})'
        _wait_for(
            f"Prometheus to see {sent} consumed messages",
            lambda: prometheus.scalar(consumed) == sent,
            180,
            worker_log,
        )
        assert prometheus.scalar("sum(socialroi_dead_letters_total)") == dead
        # every reason the truth counts, with its count
        by_reason = {
            r["metric"]["reason"]: float(r["value"][1])
            for r in prometheus.query("sum by (reason) (socialroi_dead_letters_total)")
        }
        assert by_reason == {reason: float(n) for reason, n in truth["dead_letters"].items()}
        assert prometheus.scalar('up{job="socialroi-worker"}') == 1
        assert (prometheus.scalar("sum(socialroi_rebalances_total)") or 0) >= 1
        assert prometheus.scalar("max(socialroi_sink_outage)") == 0

        # Once drained and committed, every source partition's lag goes to 0.
        def drained() -> bool:
            lag = prometheus.query("socialroi_consumer_lag")
            topics = {r["metric"]["topic"] for r in lag}
            return env["SOCIALROI_TOPICS__SOCIAL"] in topics and all(
                float(r["value"][1]) == 0 for r in lag
            )

        _wait_for("consumer lag 0 on every partition", drained, 120, worker_log)
        assert prometheus.scalar("max(socialroi_last_write_event_time_seconds)") > 0  # type: ignore[operator]
        # The real server loaded the rules; a healthy run fires none of them.
        rules = orjson.loads(http_get(f"{prometheus.url}/api/v1/rules")[1])
        names = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
        assert "SocialroiWorkerDown" in names
        assert prometheus.query('ALERTS{alertstate="firing"}') == []

        assert http_get(f"{base}/healthz")[0] == 200
        assert http_get(f"{base}/readyz")[0] == 200
        status, body = http_get(f"{base}/metrics")
        assert status == 200 and b"socialroi_consumer_lag{" in body
    finally:
        prometheus.stop()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, worker_log.read_text()[-3000:]


def test_shared_prometheus_config_is_valid() -> None:
    checked = promtool("check", "config", str(ROOT / "deploy/local/prometheus/prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
