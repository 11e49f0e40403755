"""`parcours dev`: broker, Redis, consumers and API on one machine, stopped cleanly on Ctrl-C.

Kafka and Redis are embedded unless `PARCOURS_KAFKA_BOOTSTRAP` / `PARCOURS_REDIS_URL` point
elsewhere. Each role runs as its own process, exactly as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from service.bus import ensure_parcours_topics
from service.embedded import EmbeddedKafka, EmbeddedRedis, die_with_parent, free_port
from service.replay import Format, replay_file
from service.settings import Settings

_DEV_GROUP_TIMEOUTS = {
    # The embedded broker holds a group join for about half the session timeout; short
    # timeouts keep restarts in development quick. Production keeps the library defaults.
    "PARCOURS_KAFKA_SESSION_TIMEOUT_MS": "6000",
    "PARCOURS_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
}


@dataclass
class DevStack:
    settings: Settings
    consumers: int = 1
    port: int | None = None
    kafka: EmbeddedKafka | None = None
    redis: EmbeddedRedis | None = None
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    metrics_ports: list[int] = field(default_factory=list)
    auth: bool = False

    def start(self) -> None:
        env = dict(os.environ)
        # a development machine's webhook receivers are local: allow them unless told otherwise
        for name in ("PARCOURS_WEBHOOKS_ALLOW_HTTP", "PARCOURS_WEBHOOKS_ALLOW_PRIVATE_TARGETS"):
            env.setdefault(name, "true")
        # and its API is open unless told otherwise (`parcours keys` makes keys for a real one)
        env.setdefault("PARCOURS_API_AUTH", "false")
        self.auth = env["PARCOURS_API_AUTH"].lower() in ("1", "true", "yes", "on")
        if not self.settings.kafka.bootstrap:
            self.kafka = EmbeddedKafka()
            self.kafka.start()
            env |= {"PARCOURS_KAFKA_BOOTSTRAP": self.kafka.bootstrap, **_DEV_GROUP_TIMEOUTS}
        if not self.settings.redis.url:
            self.redis = EmbeddedRedis()
            self.redis.start()
            env["PARCOURS_REDIS_URL"] = self.redis.url
        self.settings = self.settings.model_copy(
            update={
                "kafka": self.settings.kafka.model_copy(
                    update={"bootstrap": env["PARCOURS_KAFKA_BOOTSTRAP"]}
                ),
                "redis": self.settings.redis.model_copy(update={"url": env["PARCOURS_REDIS_URL"]}),
            }
        )
        asyncio.run(ensure_parcours_topics(self.settings))
        self.port = self.port or _api_port(self.settings.api.port)
        self.metrics_ports = [free_port() for _ in range(self.consumers)]
        for port in self.metrics_ports:
            self._spawn(["consume"], env | {"PARCOURS_CONSUMER_METRICS_PORT": str(port)})
        if self.settings.models.enabled:
            self.metrics_ports.append(free_port())
            trainer_port = {"PARCOURS_MODELS_TRAINER_METRICS_PORT": str(self.metrics_ports[-1])}
            self._spawn(["train"], env | trainer_port)
        self.metrics_ports.append(free_port())
        dispatcher_port = {"PARCOURS_WEBHOOKS_METRICS_PORT": str(self.metrics_ports[-1])}
        self._spawn(["dispatch"], env | dispatcher_port)
        self._spawn(["api", "--port", str(self.port)], env)
        self._wait_ready()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def banner(self) -> str:
        kafka = f"embedded Tansu at {self.settings.kafka.bootstrap}" if self.kafka else "yours"
        redis = f"embedded redis-server at {self.settings.redis.url}" if self.redis else "yours"
        metrics = ", ".join(f"http://127.0.0.1:{p}/metrics" for p in self.metrics_ports)
        return "\n".join(
            [
                f"Parcours is running (Kafka: {kafka}; Redis: {redis})",
                f"  API       {self.api_url}   (docs: {self.api_url}/docs)",
                f"  Journey   curl {self.api_url}/v1/customers/<customer_id>/journey",
                f"  Scores    curl {self.api_url}/v1/customers/<customer_id>/predictions",
                f"  Models    curl {self.api_url}/v1/models",
                f"  Show now  curl {self.api_url}/v1/customers/<customer_id>/recommendations",
                f"  Webhooks  curl {self.api_url}/v1/webhooks   (http://localhost targets allowed)",
                f"  Metrics   {self.api_url}/metrics   workers: {metrics}",
                "  Keys      "
                + (
                    "required: `parcours keys create <name> --scope admin` (from another shell)"
                    if self.auth
                    else "not required in development (PARCOURS_API_AUTH=true requires them)"
                ),
                "  From another shell:",
                f"    export PARCOURS_KAFKA_BOOTSTRAP={self.settings.kafka.bootstrap}"
                f" PARCOURS_REDIS_URL={self.settings.redis.url}",
                "Press Ctrl-C to stop.",
            ]
        )

    def replay(self, path: Path, fmt: Format, speed: float) -> str:
        report = asyncio.run(replay_file(self.settings, path, fmt, speed=speed))
        lines = [
            f"Replayed {report.sent} events for {len(report.customers)} customers "
            f"in {report.seconds:.1f}s ({report.invalid} invalid lines skipped)"
        ]
        lines += [f"  {error}" for error in report.errors]
        if report.customers:
            busiest = report.customers.most_common(1)[0][0]
            lines.append(f"  Try: curl {self.api_url}/v1/customers/{busiest}/journey")
        return "\n".join(lines)

    def wait(self) -> int:
        """Block until a role exits on its own (an error) or the user interrupts."""
        while True:
            for child in self.children:
                if child.poll() is not None:
                    print(f"{_role(child)} exited with {child.returncode}", file=sys.stderr)
                    return 1
            time.sleep(0.5)

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for server in (self.kafka, self.redis):
            if server is not None:
                server.close()

    def _spawn(self, args: list[str], env: dict[str, str]) -> None:
        command = [sys.executable, "-m", "service.cli", *args]
        self.children.append(
            subprocess.Popen(  # noqa: S603 - our own interpreter and module
                command,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
        )

    def _wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for child in self.children:
                if child.poll() is not None:
                    raise RuntimeError(f"{_role(child)} exited with {child.returncode} at start-up")
            url = f"{self.api_url}/readyz"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310
                if response.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the API at {self.api_url} was not ready within {timeout_s}s")


def _api_port(preferred: int) -> int:
    """The configured API port if it is free, else any free port."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def _role(child: subprocess.Popen[bytes]) -> str:
    args = child.args if isinstance(child.args, list) else [child.args]
    return "parcours " + " ".join(str(a) for a in args[3:])
