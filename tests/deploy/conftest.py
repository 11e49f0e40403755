"""promtool for the Prometheus tests: from the virtualenv (scripts/install-test-tools puts it
there) or PATH. Missing, the tests that need it fail and say how to get it; they never skip."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deploy.support import ROOT

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def promtool() -> str:
    beside_python = Path(sys.executable).parent / "promtool"
    found = str(beside_python) if beside_python.exists() else shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool not found in the virtualenv or on PATH. Run scripts/install-test-tools "
            "(it unpacks promtool from Debian's `prometheus` package; as root it also refreshes "
            "the package lists), or install Prometheus's promtool yourself.",
            pytrace=False,
        )
    return found


@pytest.fixture
def run() -> Run:
    """Run a command from the repository root; the caller asserts on its result."""

    def _run(*command: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(part) for part in command],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return _run
