"""Session-wide real infrastructure: a Kafka-protocol broker and a redis-server on free ports.

`PARCOURS_KAFKA_BOOTSTRAP` / `PARCOURS_REDIS_URL` point the suite at existing ones instead.
Each test gets its own topics, consumer group and Redis key prefix, so tests never share state.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest

from service.embedded import EmbeddedKafka, EmbeddedRedis, EmbeddedRedisCluster
from service.settings import (
    ApiSettings,
    ConsumerSettings,
    JourneySettings,
    KafkaSettings,
    ModelSettings,
    RedisSettings,
    Settings,
    TriggerSettings,
    WebhookSettings,
)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    existing = os.environ.get("PARCOURS_KAFKA_BOOTSTRAP")
    if existing:
        yield existing
        return
    with EmbeddedKafka() as kafka:
        yield kafka.bootstrap


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    existing = os.environ.get("PARCOURS_REDIS_URL")
    if existing:
        yield existing
        return
    with EmbeddedRedis() as redis:
        yield redis.url


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A three-primary Redis Cluster of our own (started only for the tests that ask)."""
    with EmbeddedRedisCluster(primaries=3) as cluster:
        yield cluster.url


def make_settings(
    kafka_bootstrap: str,
    redis_url: str,
    models: dict[str, object] | None = None,
    webhooks: dict[str, object] | None = None,
    journey_map: str = "retail",
    auth: bool = False,
    **kafka: object,
) -> Settings:
    """Settings isolated to one test: fresh topics, group and key prefix; quick group joins.

    API keys are off unless `auth`: the access tests (tests/integration/test_access.py)
    check every route's scope; the others test what the routes do."""
    tag = uuid.uuid4().hex[:10]
    kafka_options: dict[str, object] = {
        "bootstrap": kafka_bootstrap,
        "events_topic": f"events-{tag}",
        "dead_letter_topic": f"dlq-{tag}",
        "consumer_group": f"state-{tag}",
        "partitions": 4,
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 500,
        "fetch_max_wait_ms": 50,
        "produce_timeout_s": 5.0,
        **kafka,
    }
    return Settings(
        journey=JourneySettings(map=journey_map),
        api=ApiSettings(auth=auth),
        kafka=KafkaSettings.model_validate(kafka_options),
        redis=RedisSettings(url=redis_url, key_prefix=f"test-{tag}", socket_timeout_s=1.0),
        consumer=ConsumerSettings(
            metrics_port=0, retry_backoff_initial_s=0.05, retry_backoff_max_s=0.5
        ),
        triggers=TriggerSettings(topic=f"triggers-{tag}"),
        models=ModelSettings.model_validate(
            {
                "samples_topic": f"samples-{tag}",
                "trainer_group": f"trainer-{tag}",
                "trainer_metrics_port": 0,
                "reload_interval_s": 0.1,
                **(models or {}),
            }
        ),
        webhooks=WebhookSettings.model_validate(
            {
                "dead_letter_topic": f"triggers-dlq-{tag}",
                "dispatcher_group": f"dispatcher-{tag}",
                "timeout_s": 1.0,
                "backoff_base_s": 0.05,
                "backoff_max_s": 0.2,
                "retry_after_max_s": 1.0,
                "breaker_cooldown_s": 0.5,
                "breaker_max_cooldown_s": 2.0,
                "park_poll_s": 0.05,
                "park_lease_s": 5.0,
                "subscriptions_refresh_s": 0.1,
                "metrics_port": 0,
                **(webhooks or {}),
            }
        ),
    )


@functools.cache
def awake_map() -> str:
    """The retail map without its quiet hours, as a file: deliveries a test expects now must
    not wait for the morning when the suite runs at night (UTC)."""
    text = resources.files("models.maps").joinpath("retail.yaml").read_text("utf-8")
    awake = "\n".join(line for line in text.splitlines() if "quiet_hours:" not in line)
    assert awake != text, "the retail map has quiet hours to take out"
    path = Path(tempfile.mkdtemp(prefix="parcours-maps-")) / "retail-awake.yaml"
    path.write_text(awake + "\n", "utf-8")
    return str(path)


@pytest.fixture
def settings(kafka_bootstrap: str, redis_url: str) -> Settings:
    return make_settings(kafka_bootstrap, redis_url)


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
