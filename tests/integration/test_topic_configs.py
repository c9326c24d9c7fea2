"""Every topic the pipeline creates says how the broker keeps it, read back from the real
broker: streams are deleted by age (the repartition topic after seven days), table
changelogs are compacted with segments small enough for compaction to reach them. The
topics are created the way a user creates them: ``socialroi topics``, then a worker start.
A changelog that exists but is not compacted stops the worker with how to fix it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

pytestmark = pytest.mark.integration
Run = Callable[..., CompletedProcess[str]]
WEEK_MS = str(7 * 86400 * 1000)


@pytest.fixture
def admin(kafka_bootstrap: str) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="test-topic-configs")
    yield client
    client.close()


def _configs(admin: KafkaAdminClient, prefix: str) -> dict[str, dict[str, tuple[str, str]]]:
    """Topics whose names start with ``prefix`` -> {config: (value, source)} of the
    configs a topic can set, as the broker reports them."""
    names = sorted(t for t in admin.list_topics() if t.startswith(prefix))
    keys = ["cleanup.policy", "retention.ms", "segment.ms", "segment.bytes", "max.message.bytes"]
    described = admin.describe_configs(
        [
            ConfigResource(ConfigResourceType.TOPIC, name, configs=dict.fromkeys(keys))
            for name in names
        ],
        config_filter="all",
    )
    return {
        name: {key: (entry["value"], entry["config_source"]) for key, entry in found.items()}
        for name, found in described["topic"].items()
    }


def _worker(env: dict[str, str], cwd: Path, *args: str) -> CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker", *args],
        env=env,
        cwd=cwd,
        text=True,
        capture_output=True,
        timeout=300,
        check=False,
    )


def test_topics_then_worker_create_every_topic_with_its_policy(
    socialroi: Run,
    pipeline_env: dict[str, str],
    fresh_server_url: str,
    admin: KafkaAdminClient,
    tmp_path: Path,
) -> None:
    env = {**pipeline_env, "SOCIALROI_CLICKHOUSE__URL": fresh_server_url}
    app = env["SOCIALROI_WORKER__APP_ID"]  # topics are it-<run>.* and it-<run>-*
    assert socialroi(env, "migrate").returncode == 0

    result = socialroi(env, "topics")
    assert result.returncode == 0, result.stderr[-2000:]
    streams = [env[f"SOCIALROI_TOPICS__{n}"] for n in ("SOCIAL", "WEB", "COSTS", "CAMPAIGNS")]
    streams += [env["SOCIALROI_TOPICS__DEAD_LETTERS"], env["SOCIALROI_TOPICS__LATE"]]
    repartition = f"{app}-contributions-by-campaign"
    found = _configs(admin, app)
    assert sorted(found) == sorted([*streams, repartition])
    for name in streams:
        # delete, stated on the topic; the retention is the broker's (the operator's)
        assert found[name]["cleanup.policy"] == ("delete", "DYNAMIC_TOPIC_CONFIG"), name
        assert found[name]["retention.ms"][1] != "DYNAMIC_TOPIC_CONFIG", name
    assert found[repartition]["cleanup.policy"] == ("delete", "DYNAMIC_TOPIC_CONFIG")
    assert found[repartition]["retention.ms"] == (WEEK_MS, "DYNAMIC_TOPIC_CONFIG")
    # Ingest topics take 1 MiB whatever the broker's default (this one allows 16 MiB); the
    # topics carrying a whole message in base64 (dead letters, late events) take 2 MiB.
    for name in streams[:4]:
        assert found[name]["max.message.bytes"] == ("1048576", "DYNAMIC_TOPIC_CONFIG"), name
    for name in streams[4:]:
        assert found[name]["max.message.bytes"] == ("2097152", "DYNAMIC_TOPIC_CONFIG"), name

    # A worker start creates the table changelogs (Faust, through streams.app).
    result = _worker(env, tmp_path, "--stop-when-idle", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert " ERROR " not in result.stderr and " WARNING " not in result.stderr, result.stderr
    found = _configs(admin, app)
    changelogs = [f"{app}-ingest-state-changelog", f"{app}-kpi-windows-changelog"]
    # Exactly these: no topic the broker created with its defaults (no assignor topic).
    assert sorted(found) == sorted([*streams, repartition, *changelogs])
    for name in changelogs:
        assert found[name]["cleanup.policy"] == ("compact", "DYNAMIC_TOPIC_CONFIG"), name
        assert found[name]["segment.ms"] == ("600000", "DYNAMIC_TOPIC_CONFIG"), name
        assert found[name]["segment.bytes"] == (str(64 * 1024 * 1024), "DYNAMIC_TOPIC_CONFIG")
    for name in streams:  # the worker's own ensure_topics changed nothing
        assert found[name]["cleanup.policy"] == ("delete", "DYNAMIC_TOPIC_CONFIG"), name


def test_worker_refuses_a_changelog_that_is_not_compacted(
    socialroi: Run,
    pipeline_env: dict[str, str],
    fresh_server_url: str,
    admin: KafkaAdminClient,
    tmp_path: Path,
) -> None:
    env = {**pipeline_env, "SOCIALROI_CLICKHOUSE__URL": fresh_server_url}
    changelog = f"{env['SOCIALROI_WORKER__APP_ID']}-kpi-windows-changelog"
    # What a broker with auto.create.topics.enable makes when a client touches it first.
    admin.create_topics([NewTopic(changelog, 4, 1)])
    assert socialroi(env, "migrate").returncode == 0
    result = _worker(env, tmp_path, "--stop-when-idle", "2")
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"table changelog {changelog} has cleanup.policy=delete, not compact" in result.stderr
    assert "Traceback" not in result.stderr
