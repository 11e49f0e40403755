"""The Kubernetes manifests validate, offline and strictly (unknown fields refused), against
the Kubernetes schemas kubernetes-validate ships; the KEDA ScaledObjects, a CRD it has no
schema for, pass a structural check of KEDA's documented fields written here; and every role
runs a real command with real settings, probes on the ports it listens on, and limits."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from service.api.routes.meta import router
from service.settings import Settings
from tests.deploy.support import DEPLOY, ROOT, load_documents, load_yaml, parcours_commands
from tests.deploy.support import settings_from_env as _settings_from_env

K8S = DEPLOY / "k8s"
VERSIONS = ["1.29", kubernetes_validate.latest_version()]
ROLES = {"api", "consume", "train", "dispatch"}
SECRET = "parcours-credentials"
NOT_IN_KUBERNETES = {("keda.sh/v1alpha1", "ScaledObject")}


def _documents() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in load_documents(path)]  # fmt: skip


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in _documents() if doc["kind"] == kind}


def _settings() -> Settings:
    (config,) = _by_kind("ConfigMap").values()
    return _settings_from_env(config["data"])


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_valid_against_kubernetes_schemas_strictly(version: str) -> None:
    checked = 0
    for doc in _documents():
        if (doc["apiVersion"], doc["kind"]) in NOT_IN_KUBERNETES:
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1

    assert checked >= 10


def test_validator_refuses_a_misspelled_field() -> None:
    deployment = copy.deepcopy(_by_kind("Deployment")["parcours-api"])
    container = _container(deployment)
    container["readinesProbe"] = container.pop("readinessProbe")

    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = load_yaml(K8S / "kustomization.yaml")["resources"]
    files = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}

    assert sorted(listed) == sorted(files)


def test_configmap_and_container_environment_are_settings() -> None:
    settings = _settings()
    secret_keys = set()
    for workload in [*_by_kind("Deployment").values(), *_by_kind("Job").values()]:
        container = _container(workload)
        assert container["envFrom"] == [{"configMapRef": {"name": "parcours-config"}}]
        env = {item["name"]: item for item in container["env"]}
        _settings_from_env(dict.fromkeys(env, "x") | {"PARCOURS_REDIS_URL": "redis://r:6379/0"})
        for item in env.values():
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == SECRET
            secret_keys.add(ref["key"])
    readme = (ROOT / "README.md").read_text()

    assert settings.kafka.create_topics is False, "the topics Job creates them"
    for key in secret_keys:
        assert f"--from-literal={key}=" in readme, f"document the Secret key {key}"


def test_each_role_runs_its_command_with_probes_ports_and_resources() -> None:
    settings = _settings()
    ports = {
        "api": settings.api.port,
        "consume": settings.consumer.metrics_port,
        "train": settings.models.trainer_metrics_port,
        "dispatch": settings.webhooks.metrics_port,
    }
    deployments = _by_kind("Deployment")

    assert set(deployments) == {f"parcours-{role}" for role in ROLES}
    for role, port in ports.items():
        pod = deployments[f"parcours-{role}"]["spec"]["template"]
        container = _container(deployments[f"parcours-{role}"])
        parcours_commands()[role].make_context(role, container["args"][1:])
        assert container["args"][0] == role
        named = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert list(named.values()) == [port], role
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port), role
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] in named, f"{role} {probe}"
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) == {"cpu", "memory"}, f"{role} {kind}"


def test_api_probes_real_routes_and_service_selects_the_api_pods() -> None:
    routes = {route.path for route in router.routes}  # type: ignore[attr-defined]
    api = _by_kind("Deployment")["parcours-api"]
    container = _container(api)
    (service,) = _by_kind("Service").values()

    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"/healthz", "/readyz", "/metrics"} <= routes
    pod_labels = api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]


def test_workloads_select_their_pods_and_run_as_the_image_user() -> None:
    dockerfile_user = [
        line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    ][-1]  # fmt: skip
    for name, workload in {**_by_kind("Deployment"), **_by_kind("Job")}.items():
        template = workload["spec"]["template"]
        security = template["spec"]["securityContext"]
        selector = workload["spec"].get("selector", {}).get("matchLabels", {})
        assert selector.items() <= template["metadata"]["labels"].items(), name
        assert security["runAsNonRoot"] is True, name
        assert str(security["runAsUser"]) == dockerfile_user, name


def test_api_autoscaled_by_hpa_and_consumers_by_keda_not_both() -> None:
    (hpa,) = _by_kind("HorizontalPodAutoscaler").values()
    keda = {doc["spec"]["scaleTargetRef"]["name"] for doc in _by_kind("ScaledObject").values()}

    assert hpa["spec"]["scaleTargetRef"]["name"] == "parcours-api"
    assert keda == {"parcours-consume", "parcours-dispatch"}
    assert "replicas" not in _by_kind("Deployment")["parcours-consume"]["spec"]


# KEDA's ScaledObject (keda.sh/v1alpha1) and its Kafka scaler, as KEDA documents them.
_KEDA_SPEC = {
    "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
    "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers",
}  # fmt: skip
_KAFKA_METADATA = {
    "bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold",
    "offsetResetPolicy", "allowIdleConsumers", "scaleToZeroOnInvalidOffset",
    "excludePersistentLag", "limitToPartitionsWithLag", "partitionLimitation", "version",
    "sasl", "tls",
}  # fmt: skip


def _keda_scaled_object_problems(doc: dict[str, Any], settings: Settings) -> list[str]:
    """What is wrong with a Kafka-triggered ScaledObject for a Parcours consumer group."""
    spec, problems = doc["spec"], []
    groups = {
        settings.kafka.consumer_group: settings.kafka.events_topic,
        settings.webhooks.dispatcher_group: settings.triggers.topic,
    }
    if doc["apiVersion"] != "keda.sh/v1alpha1" or doc["kind"] != "ScaledObject":
        problems.append("not a keda.sh/v1alpha1 ScaledObject")
    problems += [f"unknown spec field {key}" for key in set(spec) - _KEDA_SPEC]
    if spec.get("scaleTargetRef", {}).get("name") not in _by_kind("Deployment"):
        problems.append("scaleTargetRef names no Deployment here")
    if not 1 <= spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 0):
        problems.append("needs 1 <= minReplicaCount <= maxReplicaCount")
    if spec.get("maxReplicaCount", 0) > settings.kafka.partitions:
        problems.append("more replicas than partitions: the extra ones sit idle")
    for trigger in spec.get("triggers") or [{}]:
        metadata = trigger.get("metadata", {})
        if trigger.get("type") != "kafka":
            problems.append("trigger is not of type kafka")
        problems += [f"unknown kafka metadata {key}" for key in set(metadata) - _KAFKA_METADATA]
        if not all(isinstance(value, str) for value in metadata.values()):
            problems.append("trigger metadata values must be strings")
        if metadata.get("bootstrapServers") != settings.kafka.bootstrap:
            problems.append("bootstrapServers differs from PARCOURS_KAFKA_BOOTSTRAP")
        if groups.get(metadata.get("consumerGroup")) != metadata.get("topic"):
            problems.append("consumerGroup and topic are not a Parcours group and its topic")
        if not str(metadata.get("lagThreshold", "")).isdigit():
            problems.append("lagThreshold must be a whole number")
    return problems


@pytest.mark.parametrize("name", ["parcours-consume", "parcours-dispatch"])
def test_keda_scaled_object_structure(name: str) -> None:
    assert _keda_scaled_object_problems(_by_kind("ScaledObject")[name], _settings()) == []


def test_keda_structure_check_finds_problems() -> None:
    broken = copy.deepcopy(_by_kind("ScaledObject")["parcours-consume"])
    broken["spec"]["maxReplicaCount"] = 64
    broken["spec"]["triggers"][0]["metadata"] |= {"lagThreshold": 5, "topic": "parcours.triggers"}

    problems = _keda_scaled_object_problems(broken, _settings())

    assert len(problems) == 3, problems
