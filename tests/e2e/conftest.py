"""Parcours roles as real child processes, with their logs kept for assertions."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


class Role:
    """One `python -m service.cli <args>` process writing its log to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._file = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", *args],
            env={**os.environ, **env},
            stdout=self._file,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.output():
            if self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not seen within {timeout_s}s:\n{self.output()}")
            time.sleep(0.1)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def terminate(self, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self._file.close()


def wait_healthy(api: Role, base: str, timeout_s: float = 90.0) -> None:
    """Block until the API at `base` answers `/healthz` (failing with its log if it never does)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        assert time.monotonic() < deadline, api.output()
        time.sleep(0.3)


EMBEDDED = {"PARCOURS_KAFKA_BOOTSTRAP": "", "PARCOURS_REDIS_URL": ""}
"""`parcours dev` embeds both the broker and Redis (whatever the test session points at)."""


def start_dev(
    roles: list[Role], log_dir: Path, port: int, env: dict[str, str], timeout_s: float = 120
) -> Role:
    """`parcours dev --replay sample` serving on `port`, returned once the replay is done."""
    dev = Role(["dev", "--replay", "sample", "--port", str(port)], env, log_dir / "dev.log")
    roles.append(dev)
    dev.wait_for_output("Try: curl", timeout_s=timeout_s)
    return dev


@pytest.fixture
def roles(tmp_path: Path) -> Iterator[list[Role]]:
    """Started roles are killed at the end of the test whatever happens."""
    started: list[Role] = []
    yield started
    for role in started:
        role.close()
