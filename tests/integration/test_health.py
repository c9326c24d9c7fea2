"""Liveness under a frozen worker: a real worker (real Kafka, ClickHouse 18.16) in this
process, its event loop blocked, then its ClickHouse writes hung; ``/healthz`` must go 503
within ``SOCIALROI_METRICS__LIVENESS_SECONDS`` each time, and come back once it moves."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from pipeline.ports import ForwardingSink
from pipeline.settings import Settings
from sinks import ClickHouseSink, apply_migrations, open_backend
from streams.health import HEARTBEAT_SECONDS
from streams.producer import ensure_topics
from streams.run import worker_main
from tests.integration.conftest import SOCIALROI
from tests.integration.prometheus_helpers import free_port, http_get

pytestmark = pytest.mark.integration

Run = Callable[..., CompletedProcess[str]]
LIVENESS_SECONDS = 3.0


class _HangingSink(ForwardingSink):
    """ClickHouse, except that while ``hang`` is set a write never returns (nor fails):
    a server that accepted the connection and went silent."""

    def __init__(self, inner: ClickHouseSink) -> None:
        super().__init__(inner)
        self.hang = False
        self._released: asyncio.Event | None = None

    async def start(self) -> None:
        self._released = asyncio.Event()
        await super().start()

    async def flush(self) -> None:
        assert self._released is not None
        if self.hang:
            await self._released.wait()
        await super().flush()

    def release(self) -> None:
        assert self._released is not None
        self.hang = False
        self._released.set()


def _get(url: str) -> tuple[int | None, str]:
    try:
        status, body = http_get(url, timeout=2)
        return status, body.decode()
    except OSError:
        return None, ""


async def _until(what: str, url: str, check: Callable[[int | None, str], bool], timeout: float):
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        status, body = await asyncio.to_thread(_get, url)
        if check(status, body):
            return time.monotonic() - began, body
        await asyncio.sleep(0.2)
    base = url.rsplit("/", 1)[0]
    ready = _get(f"{base}/readyz")
    lag = [line for line in _get(f"{base}/metrics")[1].splitlines()
           if line.startswith(("socialroi_consumer_lag", "socialroi_sink_outage"))]  # fmt: skip
    pytest.fail(
        f"timed out after {timeout}s waiting for {what} ({url}); /readyz: {ready}; {lag}",
        pytrace=False,
    )


def test_healthz_fails_when_the_loop_is_frozen_or_the_sink_hangs(
    pipeline_env: dict[str, str],
    fresh_server_url: str,
    socialroi: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    env = {
        **pipeline_env,
        "SOCIALROI_CLICKHOUSE__URL": fresh_server_url,
        "SOCIALROI_METRICS__PORT": str(port),
        "SOCIALROI_METRICS__LIVENESS_SECONDS": str(LIVENESS_SECONDS),
        "SOCIALROI_WORKER__STORE": "memory",
    }
    for name, value in env.items():
        if name.startswith("SOCIALROI_"):
            monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.metrics.liveness_seconds == LIVENESS_SECONDS
    backend = open_backend(fresh_server_url)
    backend.start()
    try:
        apply_migrations(backend)
    finally:
        backend.close()
    ensure_topics(settings)
    base = f"http://127.0.0.1:{port}"

    async def scenario() -> None:
        sink = _HangingSink(ClickHouseSink(settings.clickhouse))
        stop = asyncio.Event()
        worker = asyncio.create_task(worker_main(settings, stop, sink=sink))
        try:
            await _until("ready", f"{base}/readyz", lambda s, _: s == 200, 180)
            assert (await asyncio.to_thread(_get, f"{base}/healthz"))[0] == 200

            # 1. A blocking call holds the event loop for twice the liveness time.
            seen: list[tuple[float, int | None, str]] = []
            frozen = time.monotonic()

            def watch() -> None:
                while time.monotonic() - frozen < 2 * LIVENESS_SECONDS + 1:
                    status, body = _get(f"{base}/healthz")
                    seen.append((time.monotonic() - frozen, status, body))
                    time.sleep(0.2)

            watcher = threading.Thread(target=watch)
            watcher.start()
            time.sleep(2 * LIVENESS_SECONDS)  # on the loop: nothing else runs meanwhile
            await asyncio.to_thread(watcher.join)
            summary = [(round(t, 1), status) for t, status, _ in seen]
            # The last beat came up to a heartbeat interval before the freeze.
            early = LIVENESS_SECONDS - HEARTBEAT_SECONDS - 0.5
            assert all(status == 200 for t, status, _ in seen if t < early), str(summary)
            failed = [(t, body) for t, status, body in seen if status == 503]
            assert failed, seen
            assert failed[0][0] <= LIVENESS_SECONDS + 1.0, failed[0]
            assert failed[0][1].startswith("not alive: event loop has not turned for "), failed
            await _until("alive again", f"{base}/healthz", lambda s, _: s == 200, 5)

            # 2. ClickHouse writes hang (no error, so no outage) while messages wait.
            sink.hang = True
            result = await asyncio.to_thread(
                socialroi,
                env,
                "simulate",
                "--events",
                "300",
                "--seed",
                "5",
                "--truth",
                str(tmp_path / "t.json"),
            )
            assert result.returncode == 0, result.stdout + result.stderr
            _, body = await _until(
                "not alive while the sink hangs",
                f"{base}/healthz",
                lambda s, _: s == 503,
                LIVENESS_SECONDS + 30,
            )
            # the hung batch's age, or, if the lag was read before the batch took the
            # messages, the messages it left waiting
            assert (
                "a batch has been under way for" in body
                or "messages waiting, no batch reached any for" in body
            ), body
            sink.release()
            await _until("alive once writes return", f"{base}/healthz", lambda s, _: s == 200, 30)
        finally:
            sink.release()
            stop.set()
            await asyncio.wait_for(worker, 120)

    asyncio.run(scenario())


def test_the_collector_is_ready_alive_and_exports_only_its_families(
    pipeline_env: dict[str, str], tmp_path: Path
) -> None:
    """A real `socialroi collect` on the local broker."""
    metrics_port = free_port()
    env = {
        **pipeline_env,
        "SOCIALROI_COLLECTOR__PORT": str(free_port()),
        "SOCIALROI_COLLECTOR__TOKEN": "tok-health-1",
        "SOCIALROI_METRICS__PORT": str(metrics_port),
    }
    log_path = tmp_path / "collector.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*SOCIALROI, "collect"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
        )
    base = f"http://127.0.0.1:{metrics_port}"
    try:
        deadline = time.monotonic() + 60
        while _get(f"{base}/readyz")[0] != 200:
            assert process.poll() is None, log_path.read_text()[-2000:]
            assert time.monotonic() < deadline, log_path.read_text()[-2000:]
            time.sleep(0.2)
        assert _get(f"{base}/healthz") == (200, "ok\n")
        status, text = _get(f"{base}/metrics")
        assert status == 200
        assert "\nprocess_resident_memory_bytes " in text
        assert "\npython_gc_objects_collected_total{" in text
        assert 'socialroi_build_info{component="collector"' in text
        for family in ("socialroi_batch_seconds", "socialroi_sink_outage", "socialroi_consumer"):
            assert family not in text, family
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, log_path.read_text()[-2000:]
    # ours stay quiet (kafka-python's own timing warnings on a loaded machine are issue 14's)
    lines = log_path.read_text().splitlines()
    assert not [line for line in lines if " ERROR " in line], lines
    assert not [line for line in lines if " WARNING streams." in line], lines
