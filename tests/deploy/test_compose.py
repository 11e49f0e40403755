"""deploy/docker-compose.yml is a valid Compose file (the Compose Specification's schema, as
check-jsonschema ships it: no Docker needed) whose Parcours services run real `parcours`
commands with real settings, and whose services, volumes and mounts all line up."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from service.settings import Settings
from tests.deploy.conftest import Run
from tests.deploy.support import DEPLOY, load_yaml, parcours_commands, settings_from_env

COMPOSE = DEPLOY / "docker-compose.yml"
ROLES = {"api", "consume", "train", "dispatch"}
ONE_SHOTS = {"topics", "replay"}


def _services() -> dict[str, Any]:
    services: dict[str, Any] = load_yaml(COMPOSE)["services"]
    return services


def _parcours() -> dict[str, Any]:
    return {name: s for name, s in _services().items() if s.get("image") == "parcours:local"}


def _settings(service: dict[str, Any]) -> Settings:
    return settings_from_env(service.get("environment", {}))


def test_compose_file_valid_against_the_compose_specification(run: Run) -> None:
    check = Path(sys.executable).parent / "check-jsonschema"

    result = run(check, "--builtin-schema", "vendor.compose-spec", COMPOSE)

    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_every_role_and_one_shot_from_the_one_image() -> None:
    parcours = _parcours()

    assert set(parcours) == ROLES | ONE_SHOTS
    for name, service in parcours.items():
        build = service["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).is_file(), name
        assert service["command"][0] == name, "each service is named after its role"


@pytest.mark.parametrize("name", sorted(ROLES | ONE_SHOTS))
def test_compose_command_parses_as_the_parcours_subcommand(name: str) -> None:
    command, *args = _parcours()[name]["command"]
    click_command = parcours_commands()[command]

    click_command.make_context(command, list(args))  # raises on an unknown option or argument


def test_compose_parcours_environment_names_and_values_are_settings() -> None:
    for name, service in _parcours().items():
        settings = _settings(service)
        assert settings.kafka.bootstrap == "kafka:9092", name
        assert str(settings.redis.url).startswith("redis://redis:6379/"), name


def test_compose_kafka_kraft_and_redis_append_only() -> None:
    services = _services()
    kafka, redis = services["kafka"], services["redis"]

    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert "INTERNAL://kafka:9092" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert kafka["environment"]["KAFKA_LOG_DIRS"] in {v.split(":")[1] for v in kafka["volumes"]}
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])


def test_compose_depends_on_existing_services_with_conditions_they_can_meet() -> None:
    services = _services()
    for name, service in services.items():
        depends = service.get("depends_on", {})
        targets = depends if isinstance(depends, list) else list(depends)
        assert set(targets) <= set(services) - {name}, name
        for target, spec in depends.items() if isinstance(depends, dict) else []:
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits on {target}'s health"
            if spec["condition"] == "service_completed_successfully":
                assert target in ONE_SHOTS, f"{name} waits for {target} to finish"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_compose_volumes_declared_and_bind_mounts_exist() -> None:
    document = load_yaml(COMPOSE)
    for name, service in document["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source}"
            else:
                assert source in document["volumes"], f"{name}: volume {source} not declared"


def test_compose_api_port_and_prometheus_scrapes_each_role_where_it_listens() -> None:
    services = _services()
    scrape = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]
    targets = {
        (name, config["port"])
        for job in scrape
        for config in job.get("dns_sd_configs", [])
        for name in config["names"]
    }
    api = _settings(services["api"])
    ports = {
        "api": api.api.port,
        "consume": _settings(services["consume"]).consumer.metrics_port,
        "train": _settings(services["train"]).models.trainer_metrics_port,
        "dispatch": _settings(services["dispatch"]).webhooks.metrics_port,
    }

    assert f"{api.api.port}:{api.api.port}" in services["api"]["ports"]
    assert targets == set(ports.items())
    assert {job["job_name"] for job in scrape} >= {f"parcours-{role}" for role in ROLES}
