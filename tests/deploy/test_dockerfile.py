"""The Dockerfile builds one small, non-root image for every role (checked by reading it: CI
has no Docker engine; `docker build -t parcours .` builds it where one exists), and its
healthcheck script finds whichever role the container runs."""

from __future__ import annotations

import http.server
import importlib.util
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from types import ModuleType

import pytest

from service.settings import Settings
from tests.deploy.support import DEPLOY, ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
HEALTHCHECK = DEPLOY / "docker" / "healthcheck.py"


def _instructions() -> list[tuple[str, str]]:
    joined = DOCKERFILE.replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (line.split(maxsplit=1)[0], line.split(maxsplit=1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def _healthcheck_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", HEALTHCHECK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _role_ports() -> dict[str, int]:
    defaults = Settings()
    return {
        "PARCOURS_API_PORT": defaults.api.port,
        "PARCOURS_CONSUMER_METRICS_PORT": defaults.consumer.metrics_port,
        "PARCOURS_MODELS_TRAINER_METRICS_PORT": defaults.models.trainer_metrics_port,
        "PARCOURS_WEBHOOKS_METRICS_PORT": defaults.webhooks.metrics_port,
    }


def test_dockerfile_multi_stage_final_stage_non_root_with_healthcheck() -> None:
    stages = [arg for op, arg in _instructions() if op == "FROM"]
    final = dict(_final_stage())

    assert len(stages) >= 2
    assert stages[0].endswith(" AS build")
    assert stages[0].split()[0] == stages[-1], "build and run on the same Python"
    assert final["USER"].isdigit()
    assert int(final["USER"]) > 0
    assert "--from=build" in final["COPY"]
    assert final["ENTRYPOINT"] == '["parcours"]'
    assert "/opt/parcours/healthcheck.py" in final["HEALTHCHECK"]
    assert "PYTHONUNBUFFERED=1" in final["ENV"]


def test_dockerfile_installs_pinned_dependencies_before_the_source() -> None:
    instructions = _instructions()
    install = next(i for i, (op, arg) in enumerate(instructions) if "-c constraints.txt" in arg)
    source = next(i for i, (op, arg) in enumerate(instructions) if arg == "models models")

    assert install < source
    assert "COPY pyproject.toml constraints.txt README.md ./" in [
        f"{op} {arg}" for op, arg in instructions
    ]


def test_dockerfile_exposes_every_role_port_the_healthcheck_probes() -> None:
    exposed = {int(port) for op, arg in _final_stage() if op == "EXPOSE" for port in arg.split()}
    probes = {variable: port for variable, port, _ in _healthcheck_module().PROBES}

    assert probes == _role_ports()
    assert exposed == set(_role_ports().values())


def test_dockerignore_keeps_the_healthcheck_in_the_build_context() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()

    assert not any(HEALTHCHECK.relative_to(ROOT).as_posix().startswith(p) for p in ignored)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Metrics(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def metrics_server() -> Iterator[int]:
    """A stand-in for a worker's /metrics endpoint on a free loopback port."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _healthcheck(env: dict[str, str]) -> int:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)], env=env, timeout=30, check=False
    ).returncode


def test_healthcheck_role_answering_healthy(metrics_server: int) -> None:
    closed = {variable: str(_free_port()) for variable in _role_ports()}

    code = _healthcheck(closed | {"PARCOURS_MODELS_TRAINER_METRICS_PORT": str(metrics_server)})

    assert code == 0


def test_healthcheck_nothing_answering_unhealthy() -> None:
    closed = {variable: str(_free_port()) for variable in _role_ports()}

    assert _healthcheck(closed | {"PARCOURS_CONSUMER_METRICS_PORT": "0"}) == 1
