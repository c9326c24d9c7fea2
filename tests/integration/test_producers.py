"""`socialroi replay` and `socialroi collect` against the real broker."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import CompletedProcess

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer

from sinks import dead_letter_counts, dead_letters, open_backend

pytestmark = pytest.mark.integration
Run = Callable[..., CompletedProcess[str]]
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 20) -> list[dict]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    values: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(values) < expected:
            values += [orjson.loads(m.value) for m in consumer]
        time.sleep(1)  # anything beyond what we expect would show up now
        values += [orjson.loads(m.value) for m in consumer]
    finally:
        consumer.close()
    return values


def event(i: int, etype: str = "page_view", **extra: object) -> dict[str, object]:
    body: dict[str, object] = {
        "event_id": f"e{i}",
        "event_type": etype,
        "user_id": f"u{i}",
        "event_time": (NOW + timedelta(seconds=i)).isoformat(),
    }
    if etype == "page_view":
        body["url"] = f"https://shop.example/?utm_campaign=c{i}"
    body.update(extra)
    return body


def test_replay_reports_bad_lines_and_sends_only_when_told(
    socialroi: Run, pipeline_env: dict[str, str], tmp_path: Path
) -> None:
    jsonl = tmp_path / "visits.jsonl"
    jsonl.write_text(
        "\n".join(
            [
                orjson.dumps(event(1)).decode(),
                orjson.dumps(event(2, utm_source="FB")).decode(),
                '{"event_id": "broken"',
                orjson.dumps(event(4, revenue=10)).decode(),
            ]
        )
        + "\n"
    )
    csv = tmp_path / "social.csv"
    csv.write_text(
        "event_id,event_type,event_time,campaign_id,channel,user_id,count,sentiment\n"
        f"s1,impression,{NOW.isoformat()},cmp-1,fb,,250,\n"
        f"s2,mention,{NOW.isoformat()},cmp-1,x,u9,,negative\n"
        f"s3,like,{NOW.isoformat()},cmp-1,fb,u9,many,\n"
    )
    strict = socialroi(pipeline_env, "replay", str(jsonl), str(csv))
    assert strict.returncode == 1
    assert f"{jsonl}:3: bad_json" in strict.stderr
    assert f"{jsonl}:4: schema_violation" in strict.stderr
    assert f"{csv}:4: schema_violation" in strict.stderr
    assert "nothing sent" in strict.stderr

    lenient = socialroi(pipeline_env, "replay", "--skip-invalid", str(jsonl), str(csv))
    assert lenient.returncode == 1, lenient.stderr
    assert "sent 4 events; 3 bad lines skipped" in lenient.stdout
    bootstrap = pipeline_env["SOCIALROI_KAFKA__BOOTSTRAP_SERVERS"]
    web = consume_all(bootstrap, pipeline_env["SOCIALROI_TOPICS__WEB"], 2)
    social = consume_all(bootstrap, pipeline_env["SOCIALROI_TOPICS__SOCIAL"], 2)
    assert sorted(v["event_id"] for v in web) == ["e1", "e2"]
    assert sorted(v["event_id"] for v in social) == ["s1", "s2"]
    impression = next(v for v in social if v["event_id"] == "s1")
    assert impression["count"] == 250 and "user_id" not in impression


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def collector(pipeline_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **pipeline_env,
        "SOCIALROI_COLLECTOR__PORT": str(port),
        "SOCIALROI_COLLECTOR__TOKEN": "tok-secret-123",
    }
    log = (tmp_path / "collector.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "collect"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail((tmp_path / "collector.log").read_text()[-2000:])
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        assert "tok-secret-123" not in (tmp_path / "collector.log").read_text()


def post(
    url: str, body: bytes, token: str | None = "tok-secret-123", ctype: str = "application/json"
) -> tuple[int, dict]:
    headers = {"Content-Type": ctype}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{url}/v1/events", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def test_collector_accepts_valid_batches_and_refuses_hostile_ones(
    collector: str, pipeline_env: dict[str, str]
) -> None:
    valid = orjson.dumps(
        [
            event(1),
            event(2, utm_source="ig"),
            event(3, "conversion", order_id="o3", revenue=12.5, currency="EUR"),
        ]
    )
    assert post(collector, valid, token=None)[0] == 401
    assert post(collector, valid, token="wrong")[0] == 403
    status, body = post(collector, b"x" * (2 * 1024 * 1024))
    assert status == 413
    status, body = post(collector, b'{"event_id": ')
    assert (status, body["error"]) == (400, "bad_json")
    status, body = post(collector, b'{"event_id": "n", "revenue": NaN}')
    assert (status, body["error"]) == (400, "bad_json")
    hostile = orjson.dumps(
        [
            event(10),
            event(11, "conversion", order_id="o", revenue="12", currency="EUR"),
            event(12, shoe_size=44),
            event(13, event_time="2999-01-01T00:00:00Z"),
            {"event_type": "poke"},
        ]
    )
    status, body = post(collector, hostile)
    assert (status, body["accepted"]) == (207, 1)  # e10 is in
    assert [(r["index"], r["line"], r["reason"]) for r in body["rejected"]] == [
        (1, None, "schema_violation"),
        (2, None, "schema_violation"),
        (3, None, "clock_skew"),
        (4, None, "unknown_event_type"),
    ]
    assert post(collector, valid, ctype="text/html")[0] == 415
    status, body = post(collector, valid)
    assert (status, body) == (202, {"accepted": 3, "rejected": []})
    ndjson = b"\n".join(orjson.dumps(event(i)) for i in (20, 21))
    assert post(collector, ndjson, ctype="application/x-ndjson") == (
        202,
        {"accepted": 2, "rejected": []},
    )
    values = consume_all(
        pipeline_env["SOCIALROI_KAFKA__BOOTSTRAP_SERVERS"], pipeline_env["SOCIALROI_TOPICS__WEB"], 6
    )
    assert sorted(v["event_id"] for v in values) == ["e1", "e10", "e2", "e20", "e21", "e3"]
    assert os.environ.get("SOCIALROI_COLLECTOR__TOKEN") is None


def test_collector_keeps_the_valid_events_of_a_batch_and_dead_letters_the_others(
    collector: str, pipeline_env: dict[str, str]
) -> None:
    """Three valid events and one invalid, as NDJSON and as an array: the valid ones reach
    Kafka (a client retrying the batch no longer loses them), each invalid one reaches the
    dead-letter topic with its reason and its bytes as sent, and the answer names it."""
    bootstrap = pipeline_env["SOCIALROI_KAFKA__BOOTSTRAP_SERVERS"]
    web, dead = (
        pipeline_env["SOCIALROI_TOPICS__WEB"],
        pipeline_env["SOCIALROI_TOPICS__DEAD_LETTERS"],
    )
    not_json = b'{"event_id": "e33", "event_type": "page_view", '
    ndjson = b"\n".join(
        [orjson.dumps(event(30)), orjson.dumps(event(31)), b"", not_json, orjson.dumps(event(32))]
    )
    status, body = post(collector, ndjson + b"\n", ctype="application/x-ndjson")
    assert (status, body["accepted"]) == (207, 3)
    (refused,) = body["rejected"]
    assert (refused["index"], refused["line"], refused["reason"]) == (2, 4, "bad_json")

    big = event(42, url="https://shop.example/?q=" + "x" * 70_000)  # over the 64 KiB limit
    batch = [event(40), event(41, shoe_size=44), big, event(43)]
    status, body = post(collector, orjson.dumps(batch), ctype="text/plain")  # read as JSON
    assert (status, body["accepted"]) == (207, 2)
    assert [(r["index"], r["line"], r["reason"]) for r in body["rejected"]] == [
        (1, None, "schema_violation"),
        (2, None, "oversize"),
    ]
    assert "shoe_size" in body["rejected"][0]["detail"]

    status, body = post(collector, orjson.dumps([{"event_type": "poke"}, [1]]))
    assert (status, body["error"], body["accepted"]) == (400, "invalid_events", 0)
    assert [r["reason"] for r in body["rejected"]] == ["unknown_event_type", "not_an_object"]

    values = consume_all(bootstrap, web, 5)
    assert sorted(v["event_id"] for v in values) == ["e30", "e31", "e32", "e40", "e43"]
    letters = consume_all(bootstrap, dead, 5)
    by_reason = {str(m["reason"]): m for m in letters}
    assert sorted(by_reason) == [
        "bad_json",
        "not_an_object",
        "oversize",
        "schema_violation",
        "unknown_event_type",
    ]
    assert len(letters) == 5
    for letter in letters:
        assert (letter["partition"], letter["offset"], letter["payload_complete"]) == (
            None,
            None,
            True,
        )
    assert base64.b64decode(by_reason["bad_json"]["payload_b64"]) == not_json
    assert by_reason["bad_json"]["topic"] == ""
    assert orjson.loads(base64.b64decode(by_reason["oversize"]["payload_b64"])) == big
    assert by_reason["oversize"]["payload_bytes"] == len(orjson.dumps(big))
    assert by_reason["schema_violation"]["topic"] == web
    assert orjson.loads(base64.b64decode(by_reason["schema_violation"]["payload_b64"])) == batch[1]
    assert base64.b64decode(by_reason["not_an_object"]["payload_b64"]) == b"[1]"


def test_the_collectors_dead_letters_reach_the_table(
    collector: str, pipeline_env: dict[str, str], socialroi: Run, fresh_server_url: str
) -> None:
    """The worker reads the dead-letter topic and stores the collector's letters in the
    ``dead_letters`` table (keyed by their place on that topic, the bytes as sent), and
    its own letters once, as it wrote them."""
    env = {**pipeline_env, "SOCIALROI_CLICKHOUSE__URL": fresh_server_url}
    dead_topic, web = env["SOCIALROI_TOPICS__DEAD_LETTERS"], env["SOCIALROI_TOPICS__WEB"]
    assert socialroi(env, "topics").returncode == 0
    not_json = b'{"event_id": "e51", "event_type": "page_view", '
    ndjson = b"\n".join([orjson.dumps(event(50)), not_json, orjson.dumps(event(52, shoe=1))])
    status, body = post(collector, ndjson, ctype="application/x-ndjson")
    assert (status, body["accepted"]) == (207, 1)
    producer = KafkaProducer(bootstrap_servers=env["SOCIALROI_KAFKA__BOOTSTRAP_SERVERS"])
    try:  # a bad message straight onto an ingest topic: the worker's own dead letter
        producer.send(web, b"[1]", key=b"u9").get(timeout=30)
    finally:
        producer.close()

    worker = socialroi(env, "worker", "--stop-when-idle", "5")
    assert worker.returncode == 0, worker.stderr[-3000:]
    worker = socialroi(env, "worker", "--stop-when-idle", "5")  # a restart stores no more
    assert worker.returncode == 0, worker.stderr[-3000:]

    backend = open_backend(fresh_server_url)
    backend.start()
    try:
        letters = dead_letters(backend)
        counts = dead_letter_counts(backend)
    finally:
        backend.close()
    assert counts == {"bad_json": 1, "not_an_object": 1, "schema_violation": 1}
    collected = {d.reason: d for d in letters if d.topic == dead_topic}
    assert sorted(collected) == ["bad_json", "schema_violation"]
    assert collected["bad_json"].payload == not_json
    assert "meant for no topic" in collected["bad_json"].detail
    assert orjson.loads(collected["schema_violation"].payload) == event(52, shoe=1)
    assert f"meant for {web}" in collected["schema_violation"].detail
    assert all(d.complete for d in letters)
    (own,) = [d for d in letters if d.topic != dead_topic]
    assert (own.topic, own.reason, own.payload) == (web, "not_an_object", b"[1]")
