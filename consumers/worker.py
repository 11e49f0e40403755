"""What every worker process sets up alike: topics, Redis, a producer and a group consumer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from consumers.runner import Backoff, BatchRunner, Handler
from service.bus import ensure_parcours_topics, make_consumer, make_producer
from service.errors import BusUnavailable, StoreUnavailable
from service.metrics import DependencyMetrics, RunnerMetrics
from service.settings import Settings
from service.store import RedisClient, learn_topology, redis_from_settings


@dataclass(frozen=True, slots=True)
class WorkerIO:
    redis: RedisClient
    producer: AIOKafkaProducer
    consumer: AIOKafkaConsumer


@contextlib.asynccontextmanager
async def worker_io(
    settings: Settings,
    *,
    group: str,
    max_redis_connections: int,
    registry: CollectorRegistry,
) -> AsyncIterator[WorkerIO]:
    """Connected clients for one worker, closed on exit; Kafka down at start: `BusUnavailable`."""
    kafka = settings.kafka
    try:
        if kafka.create_topics:
            await ensure_parcours_topics(settings)
    except (KafkaError, OSError) as exc:
        raise BusUnavailable(f"cannot reach Kafka at {kafka.bootstrap}: {exc!r}") from exc
    metrics = DependencyMetrics(registry)  # every call to Redis, every record produced
    redis = redis_from_settings(
        settings.redis, max_connections=max_redis_connections, metrics=metrics
    )
    producer = make_producer(kafka, metrics)
    consumer = make_consumer(kafka, group_id=group)
    try:
        await learn_topology(redis)
        await producer.start()
    except (KafkaError, OSError) as exc:
        await producer.stop()
        await redis.aclose()
        raise BusUnavailable(f"cannot reach Kafka at {kafka.bootstrap}: {exc!r}") from exc
    except StoreUnavailable:
        await redis.aclose()
        raise
    try:
        yield WorkerIO(redis, producer, consumer)
    finally:
        await consumer.stop()
        await producer.stop()
        await redis.aclose()


async def run_handler(
    settings: Settings,
    consumer: AIOKafkaConsumer,
    handler: Handler,
    metrics: RunnerMetrics,
    topic: str,
    stop: asyncio.Event,
) -> None:
    """Subscribe `consumer` to `topic` and feed `handler` batches until `stop` is set."""
    backoff = Backoff(
        settings.consumer.retry_backoff_initial_s, settings.consumer.retry_backoff_max_s
    )
    runner = BatchRunner(
        consumer, handler, metrics, max_batch=settings.kafka.max_batch, backoff=backoff
    )
    consumer.subscribe([topic], listener=runner.listener())
    await consumer.start()
    await runner.run(stop)
