"""Import direction: consumers -> service -> models, and models free of I/O libraries."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = ("models", "service", "consumers")
IO_LIBRARIES = {
    "asyncio", "socket", "aiokafka", "redis", "fastapi", "starlette", "uvicorn", "httpx", "aiohttp",
    "prometheus_client", "subprocess", "urllib",
}  # fmt: skip
COMPOSITION_ROOT = "service.cli"
"""The `parcours` entry point starts every role, so it alone may import `consumers`."""


def _modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield ".".join(p for p in parts if p != "__init__"), path


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _violations(module: str, imported: str) -> str | None:
    top = imported.split(".")[0]
    layer = module.split(".")[0]
    if layer == "models":
        if top in ("service", "consumers"):
            return "models is the pure domain and imports nothing of the runtime"
        if top in IO_LIBRARIES:
            return f"models does no I/O; {top} belongs in service/ or consumers/"
    if layer == "service" and top == "consumers" and module != COMPOSITION_ROOT:
        return "service is shared by workers and the API; it must not depend on consumers"
    if layer == "consumers" and imported.startswith("service.api"):
        return "workers never import the HTTP API"
    return None


@pytest.mark.parametrize(("module", "path"), list(_modules()), ids=lambda v: str(v))
def test_module_imports_follow_the_layering(module: str, path: Path) -> None:
    problems = [
        f"{module} imports {name}: {why}"
        for name in sorted(_imports(path))
        if (why := _violations(module, name)) is not None
    ]
    assert not problems, "\n".join(problems)


def test_layering_check_catches_a_violation() -> None:
    assert _violations("models.fold", "service.store") is not None
    assert _violations("models.fold", "redis.asyncio") is not None
    assert _violations("consumers.runner", "service.api.app") is not None
    assert _violations("service.store", "consumers.runner") is not None
    assert _violations("service.cli", "consumers.state_worker") is None
