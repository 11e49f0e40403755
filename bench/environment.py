"""The environment of Parcours roles started by a benchmark: isolated from every other run."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from service.embedded import EmbeddedKafka, EmbeddedRedis

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Services:
    """Where a benchmark's broker and Redis are, and the pids of those it started itself."""

    bootstrap: str
    redis_url: str
    pids: list[int]
    broker_pid: int | None = None


@contextlib.contextmanager
def local_services() -> Iterator[Services]:
    """`PARCOURS_KAFKA_BOOTSTRAP` / `PARCOURS_REDIS_URL` when set; otherwise an embedded broker
    and redis-server, started here and stopped on exit."""
    kafka = None if os.environ.get("PARCOURS_KAFKA_BOOTSTRAP") else EmbeddedKafka()
    redis = None if os.environ.get("PARCOURS_REDIS_URL") else EmbeddedRedis()
    started = [server for server in (kafka, redis) if server is not None]
    try:
        for server in started:
            server.start()
        yield Services(
            kafka.bootstrap if kafka else os.environ["PARCOURS_KAFKA_BOOTSTRAP"],
            redis.url if redis else os.environ["PARCOURS_REDIS_URL"],
            [server.pid for server in started if server.pid],
            kafka.pid if kafka else None,
        )
    finally:
        for server in started:
            server.close()


def isolated_env(
    bootstrap: str, redis_url: str, name: str, *, events_topic: str | None = None
) -> dict[str, str]:
    """Topics, consumer group and Redis key prefix named after `name` (events on
    `events_topic` when given), no fixed metrics port and quiet logs; a benchmark adds its own
    settings on top."""
    topic = events_topic or f"{name}-events"
    return {
        **os.environ,
        "PARCOURS_KAFKA_BOOTSTRAP": bootstrap,
        "PARCOURS_KAFKA_EVENTS_TOPIC": topic,
        "PARCOURS_KAFKA_DEAD_LETTER_TOPIC": f"{topic}.dlq",
        "PARCOURS_KAFKA_CONSUMER_GROUP": name,
        "PARCOURS_REDIS_URL": redis_url,
        "PARCOURS_REDIS_KEY_PREFIX": name,
        "PARCOURS_MODELS_SAMPLES_TOPIC": f"{name}-samples",
        "PARCOURS_CONSUMER_METRICS_PORT": "0",
        "PARCOURS_LOG_LEVEL": "WARNING",
        # the benchmarks time the routes' own work; a key check is a cached lookup and a hash
        "PARCOURS_API_AUTH": "false",
    }


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a live process so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def machine_ticks() -> tuple[int, int]:
    """(busy, all) CPU ticks of the whole machine so far, every core, from /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    return sum(ticks) - idle, sum(ticks)
