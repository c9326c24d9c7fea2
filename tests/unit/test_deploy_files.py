"""deploy/compose, deploy/k8s, the Dockerfile and Grafana provisioning agree with the settings.

Every SOCIALROI_<SECTION>__<FIELD> variable they set must be a real setting, topic names and
ports must be the settings' defaults, images pinned with an override, healthchecks present.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.settings import Settings, TopicSettings, env_reference

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose/compose.yaml"
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
SETTINGS = {name for name, _, _ in env_reference()}
DEFAULTS = Settings.model_construct()  # defaults only: no environment, no .env
METRICS_PORT = DEFAULTS.metrics.port
COLLECTOR_PORT = DEFAULTS.collector.port
TOPICS = {
    f"SOCIALROI_TOPICS__{name.upper()}": str(field.default)
    for name, field in TopicSettings.model_fields.items()
}
# Variables of the deployment itself (image tags, passwords handed to ClickHouse/Grafana),
# not settings of the pipeline: they have a single underscore after SOCIALROI.
SETTING_NAME = re.compile(r"^SOCIALROI_[A-Z]+__[A-Z_]+$")
SECRET_SETTINGS = {
    "SOCIALROI_KAFKA__SASL_PASSWORD",
    "SOCIALROI_CLICKHOUSE__URL",
    "SOCIALROI_COLLECTOR__TOKEN",
}
STATEFUL = {"kafka", "clickhouse", "prometheus", "grafana"}
LONG_RUNNING = {"worker", "collector"}
ONE_SHOT = {"migrate", "topics"}


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def k8s_documents() -> list[dict[str, Any]]:
    """Every object the manifests define (the kustomization itself is not one)."""
    return [
        doc
        for path in K8S
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def _check_env(where: str, env: dict[str, Any]) -> None:
    for name, value in env.items():
        if not name.startswith("SOCIALROI_"):
            continue
        if SETTING_NAME.match(name):
            assert name in SETTINGS, f"{where}: {name} is not a setting (socialroi --help)"
        if name in TOPICS:
            assert value == TOPICS[name], f"{where}: {name}={value}, settings say {TOPICS[name]}"
        if name == "SOCIALROI_METRICS__PORT":
            assert int(value) == METRICS_PORT, where
        if name == "SOCIALROI_COLLECTOR__PORT":
            assert int(value) == COLLECTOR_PORT, where


# -- compose ---------------------------------------------------------------------------------


def test_compose_has_no_version_key_and_the_expected_services() -> None:
    spec = compose()
    assert "version" not in spec
    assert set(spec["services"]) == STATEFUL | LONG_RUNNING | ONE_SHOT


def test_compose_images_are_pinned_with_an_override_variable() -> None:
    for name, service in compose()["services"].items():
        image = service["image"]
        pinned = re.fullmatch(r"(.+):\$\{[A-Z_]+:-(v?\d+(\.\d+)+)\}", image)
        assert pinned, f"{name}: {image} is not a pinned tag with an override variable"


def test_compose_healthchecks_and_dependencies() -> None:
    services = compose()["services"]
    for name in STATEFUL | LONG_RUNNING:
        check = services[name].get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            expected = (
                "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            )
            assert rule == {"condition": expected}, f"{name} -> {dependency}: {rule}"
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"
    assert "migrate" in services["worker"]["depends_on"]


def test_compose_settings_are_real_and_secrets_come_from_the_environment() -> None:
    for name, service in compose()["services"].items():
        env = service.get("environment", {})
        _check_env(f"compose {name}", env)
        for key in SECRET_SETTINGS & set(env):
            assert "${" in env[key], f"{name}: {key} must come from the environment"
        for key, value in env.items():
            if "PASSWORD" in key or "TOKEN" in key:
                assert str(value).startswith("${"), f"{name}: {key} is written in the file"
    worker = compose()["services"]["worker"]
    health = " ".join(worker["healthcheck"]["test"])
    assert f":{METRICS_PORT}/healthz" in health
    collector = compose()["services"]["collector"]
    assert collector["ports"][0].endswith(f":{COLLECTOR_PORT}")


def test_compose_prometheus_scrapes_the_metrics_port() -> None:
    config = yaml.safe_load((DEPLOY / "compose/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"socialroi-worker", "socialroi-collector"}
    for job in jobs.values():
        assert job["dns_sd_configs"][0]["port"] == METRICS_PORT
    # the alert rules' worker-down alert matches these job names
    assert 'job=~"socialroi.*"' in (DEPLOY / "prometheus/alerts.yml").read_text()


def test_compose_kafka_has_a_listener_that_producers_on_the_host_reach() -> None:
    kafka = compose()["services"]["kafka"]
    env = kafka["environment"]

    def listeners(value: str) -> dict[str, str]:
        return dict(item.split("://", 1) for item in value.split(","))

    assert listeners(env["KAFKA_LISTENERS"])["EXTERNAL"] == ":9094"
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    assert advertised["PLAINTEXT"] == "kafka:9092"  # the services inside the network
    assert (
        advertised["EXTERNAL"] == "${KAFKA_EXTERNAL_HOST:-127.0.0.1}:${KAFKA_EXTERNAL_PORT:-9094}"
    )
    assert "EXTERNAL:PLAINTEXT" in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    # published on the port it advertises, on the loopback unless asked otherwise
    assert kafka["ports"] == ["${KAFKA_EXTERNAL_BIND:-127.0.0.1}:${KAFKA_EXTERNAL_PORT:-9094}:9094"]
    readme = (DEPLOY.parent / "README.md").read_text()
    assert "SOCIALROI_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9094" in readme


# -- Dockerfile --------------------------------------------------------------------------------


def test_dockerfile_exposes_the_default_ports_and_runs_unprivileged() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(rf"^EXPOSE {METRICS_PORT} {COLLECTOR_PORT}$", text, re.M)
    assert re.search(r"^USER socialroi$", text, re.M)
    assert re.search(r'^ENTRYPOINT \["socialroi"\]$', text, re.M)
    assert re.search(r"^ARG PYTHON_VERSION=3\.\d+$", text, re.M)
    for name in re.findall(r"^ENV .*?(SOCIALROI_\w+)", text, re.M | re.S):
        assert name in SETTINGS, name
    assert f"127.0.0.1:{METRICS_PORT}/healthz" in text


# -- Kubernetes --------------------------------------------------------------------------------


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc["spec"]["template"]["spec"]["containers"])


@pytest.mark.parametrize("name", ["socialroi-worker", "socialroi-collector"])
def test_k8s_deployments_probe_health_and_readiness_on_the_metrics_port(name: str) -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in k8s_documents()}
    (container,) = _containers(docs[("Deployment", name)])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == METRICS_PORT
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["envFrom"] == [{"configMapRef": {"name": "socialroi-settings"}}]
    for env in container["env"]:
        assert env["name"] in SETTINGS, env["name"]
        assert "value" not in env, f"{env['name']} must come from the Secret"
        assert env["valueFrom"]["secretKeyRef"]["name"] == "socialroi-secrets"
    if name == "socialroi-collector":
        assert ports["http"] == COLLECTOR_PORT


def test_k8s_configmap_holds_real_settings_and_no_secret() -> None:
    docs = [d for d in k8s_documents() if d["kind"] == "ConfigMap"]
    assert len(docs) == 1
    data = docs[0]["data"]
    _check_env("configmap", data)
    assert all(SETTING_NAME.match(name) for name in data)
    assert not SECRET_SETTINGS & set(data), "passwords belong in the Secret"
    assert set(TOPICS) <= set(data)


def test_k8s_collector_service_and_migrate_job() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in k8s_documents()}
    service = docs[("Service", "socialroi-collector")]
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports == {"http": COLLECTOR_PORT, "metrics": METRICS_PORT}
    job = docs[("Job", "socialroi-migrate")]
    assert _containers(job)[0]["args"] == ["migrate"]


def test_k8s_images_are_pinned_in_the_kustomization() -> None:
    kustomization = yaml.safe_load((DEPLOY / "k8s/kustomization.yaml").read_text())
    pinned = {i["name"]: i["newTag"] for i in kustomization["images"]}
    assert all(re.match(r"^\d+(\.\d+)+$", str(tag)) for tag in pinned.values()), pinned
    resources = set(kustomization["resources"])
    assert "secret.example.yaml" not in resources
    for doc in k8s_documents():
        if doc["kind"] in {"Deployment", "Job"}:
            for container in _containers(doc):
                assert container["image"] in pinned, container["image"]
    for path in K8S:
        if path.name not in {"kustomization.yaml", "secret.example.yaml"}:
            assert path.name in resources, f"{path.name} is not applied"


def rendered_k8s() -> list[dict[str, Any]]:
    """What ``kubectl apply -k deploy/k8s`` applies: the kustomization's resources with its
    namespace and image tags (the only transformations it uses; a test checks that)."""
    kustomization = yaml.safe_load((DEPLOY / "k8s/kustomization.yaml").read_text())
    assert set(kustomization) == {"apiVersion", "kind", "namespace", "resources", "images"}
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in kustomization["images"]}
    docs = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()):
            if doc["kind"] != "Namespace":
                doc["metadata"]["namespace"] = kustomization["namespace"]
            for container in _containers(doc) if doc["kind"] in {"Deployment", "Job"} else []:
                container["image"] = images[container["image"]]
            docs.append(doc)
    return docs


def test_k8s_rendered_manifests_are_valid_kubernetes_objects() -> None:
    """Strict validation against the API's schemas (offline, kubernetes-validate): a
    misspelt or misplaced field is an error, not silently dropped by the API server."""
    import kubernetes_validate

    docs = rendered_k8s()
    assert {d["kind"] for d in docs} >= {"Deployment", "Job", "PodDisruptionBudget"}
    for doc in docs:
        for version in ("1.27", "1.33"):
            kubernetes_validate.validate(doc, version, strict=True)
    broken = next(d for d in rendered_k8s() if d["kind"] == "Deployment")
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRoot"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.33", strict=True)


# The Pod Security Standards' "restricted" profile, as far as these manifests can break it.
_RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip


def _pod_specs() -> list[tuple[str, dict[str, Any]]]:
    return [
        (doc["metadata"]["name"], doc["spec"]["template"]["spec"])
        for doc in rendered_k8s()
        if doc["kind"] in {"Deployment", "Job", "StatefulSet"}
    ]


def test_k8s_pods_meet_the_restricted_profile_and_the_namespace_enforces_it() -> None:
    namespace = yaml.safe_load((DEPLOY / "k8s/namespace.yaml").read_text())
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    specs = _pod_specs()
    assert {name for name, _ in specs} == {
        "socialroi-worker",
        "socialroi-collector",
        "socialroi-migrate",
        "socialroi-topics",
    }
    for name, spec in specs:
        pod = spec.get("securityContext", {})
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), name
        assert not spec.get("hostIPC"), name
        for volume in spec.get("volumes", []):
            kinds = set(volume) - {"name"}
            assert kinds <= _RESTRICTED_VOLUMES, f"{name}: {volume}"
        for container in spec["containers"] + spec.get("initContainers", []):
            own = container.get("securityContext", {})
            where = f"{name}/{container['name']}"
            assert own.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, where
            assert own.get("runAsUser", pod.get("runAsUser")) not in (None, 0), where
            assert own["allowPrivilegeEscalation"] is False, where
            assert own["capabilities"]["drop"] == ["ALL"], where
            assert not own["capabilities"].get("add"), where
            assert not own.get("privileged"), where
            seccomp = own.get("seccompProfile", pod.get("seccompProfile", {}))
            assert seccomp.get("type") in {"RuntimeDefault", "Localhost"}, where
            # not in the profile, but asked for: nothing writes the image
            assert own["readOnlyRootFilesystem"] is True, where
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: a read-only root needs a writable /tmp"
            resources = container["resources"]
            assert resources["requests"]["memory"] and resources["limits"]["memory"], where


def _mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit == "Gi" else 1)


def test_k8s_workers_have_a_disruption_budget_a_topics_job_and_room_for_their_peak() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in rendered_k8s()}
    budget = docs[("PodDisruptionBudget", "socialroi-worker")]["spec"]
    worker = docs[("Deployment", "socialroi-worker")]
    assert budget["selector"] == worker["spec"]["selector"]
    assert budget["maxUnavailable"] == 1
    topics = _containers(docs[("Job", "socialroi-topics")])[0]
    assert topics["args"] == ["topics"]
    # the README's peak RSS at 10,000 campaigns, as the worker is now, with headroom
    readme = (ROOT / "README.md").read_text()
    final = re.search(r"^\| \w+: final .*\| [\d,]+ / ([\d,]+) MiB \|", readme, re.M)
    assert final, "the README's performance table has no final row"
    peak = int(final[1].replace(",", ""))
    (container,) = _containers(worker)
    limit = _mebibytes(container["resources"]["limits"]["memory"])
    request = _mebibytes(container["resources"]["requests"]["memory"])
    assert request >= peak and limit >= 2 * peak, (peak, request, limit)


# -- Grafana -----------------------------------------------------------------------------------


def test_grafana_reads_clickhouse_read_only_with_a_password_from_the_environment() -> None:
    sources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/datasources.yml").read_text()
    )
    (clickhouse,) = [
        d for d in sources["datasources"] if d["type"] == "grafana-clickhouse-datasource"
    ]
    assert clickhouse["jsonData"]["username"] == "socialroi_reader"
    assert clickhouse["secureJsonData"]["password"] == "${SOCIALROI_GRAFANA_CH_PASSWORD}"
    grafana = compose()["services"]["grafana"]
    referenced = set(re.findall(r"\$\{(\w+)\}", yaml.safe_dump(sources)))
    assert referenced <= set(grafana["environment"]), referenced - set(grafana["environment"])


def test_grafana_has_its_plugin_pinned_in_the_image_and_installs_nothing_at_start() -> None:
    grafana = compose()["services"]["grafana"]
    assert not any(key.startswith("GF_INSTALL_PLUGINS") for key in grafana["environment"])
    assert grafana["build"]["context"] == "../grafana"
    plugin = grafana["build"]["args"]["GRAFANA_CLICKHOUSE_PLUGIN_VERSION"]
    pinned = re.fullmatch(r"\$\{GRAFANA_CLICKHOUSE_PLUGIN_VERSION:-(\d+\.\d+\.\d+)\}", plugin)
    assert pinned, plugin
    dockerfile = (DEPLOY / "grafana/Dockerfile").read_text()
    assert f"ARG GRAFANA_CLICKHOUSE_PLUGIN_VERSION={pinned[1]}" in dockerfile
    install = re.search(r"plugins install grafana-clickhouse-datasource (\S+)", dockerfile)
    assert install and install[1] == '"$GRAFANA_CLICKHOUSE_PLUGIN_VERSION"'
    # the air-gapped instructions name the same version
    assert f"grafana-clickhouse-datasource/versions/{pinned[1]}/download" in dockerfile
    grafana_version = re.search(r"\$\{GRAFANA_VERSION:-([\d.]+)\}", grafana["image"])
    assert grafana_version and f"ARG GRAFANA_VERSION={grafana_version[1]}" in dockerfile
    sources = (DEPLOY / "grafana/provisioning/datasources/datasources.yml").read_text()
    assert "GF_INSTALL_PLUGINS" not in sources


def test_kafka_python_checksums_batches_in_c() -> None:
    """Without the ``crc32c`` package kafka-python computes every record batch's CRC32C in
    pure Python, which caps the producer at a third of its speed."""
    from kafka.record import util

    assert util.crc32c_c is not None
    assert util.calc_crc32c(memoryview(b"123456789")) == 0xE3069283  # RFC 3720 check value
