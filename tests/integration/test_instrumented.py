"""Calls to Redis (standalone and cluster) and records produced to Kafka are timed, and their
failures counted, at the clients every role uses."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.errors import ProducerClosed
from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError

from service.bus import ensure_topics, make_producer
from service.metrics import DependencyMetrics
from service.settings import KafkaSettings
from service.store import connect_redis, learn_topology


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("cluster", [False, True], ids=["standalone", "cluster"])
async def test_redis_commands_and_pipelines_are_timed_by_name(
    redis_url: str, redis_cluster_url: str, cluster: bool
) -> None:
    registry = CollectorRegistry()
    redis = connect_redis(
        redis_cluster_url if cluster else redis_url, socket_timeout_s=2, max_connections=4,
        cluster=cluster, metrics=DependencyMetrics(registry),
    )  # fmt: skip
    await learn_topology(redis)
    await redis.set("{t}:a", b"1")
    assert await redis.get("{t}:a") == b"1"
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr("{t}:b")
        pipe.get("{t}:a")
        assert await pipe.execute() == [1, b"1"]
    script = redis.register_script("return redis.call('GET', KEYS[1])")
    assert await script(keys=["{t}:a"]) == b"1"
    await redis.delete("{t}:a", "{t}:b")
    await redis.aclose()

    count = "parcours_redis_command_duration_seconds_count"
    assert _value(registry, count, command="SET") == 1
    assert _value(registry, count, command="GET") == 1
    assert _value(registry, count, command="MULTI") == 1
    assert _value(registry, count, command="EVALSHA") >= 1
    assert _value(registry, "parcours_redis_command_duration_seconds_sum", command="GET") > 0


async def test_redis_failures_are_counted_by_command_and_error() -> None:
    registry = CollectorRegistry()
    down = connect_redis(
        "redis://127.0.0.1:1/0", socket_timeout_s=0.5, max_connections=1,
        metrics=DependencyMetrics(registry),
    )  # fmt: skip

    with pytest.raises(RedisConnectionError):
        await down.get("x")
    await down.aclose()

    errors = "parcours_redis_command_errors_total"
    assert _value(registry, errors, command="GET", error="ConnectionError") == 1
    assert _value(registry, "parcours_redis_command_duration_seconds_count", command="GET") == 1


async def test_records_produced_are_timed_to_their_ack_and_refusals_counted(
    kafka_bootstrap: str,
) -> None:
    registry = CollectorRegistry()
    kafka = KafkaSettings(bootstrap=kafka_bootstrap)
    topic = f"instrumented-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka, [topic])
    producer = make_producer(kafka, DependencyMetrics(registry))
    await producer.start()
    try:
        futures = [await producer.send(topic, b"v", key=b"k") for _ in range(3)]
        for future in futures:
            await future
    finally:
        await producer.stop()
    with pytest.raises(ProducerClosed):
        await producer.send(topic, b"late")

    assert _value(registry, "parcours_kafka_produce_duration_seconds_count", topic=topic) == 3
    errors = "parcours_kafka_produce_errors_total"
    assert _value(registry, errors, topic=topic, error="ProducerClosed") == 1
