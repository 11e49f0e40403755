"""`parcours train`: the trainer process, wired from settings."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.errors import KafkaError
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from consumers.deadletter import DeadLetterSink
from consumers.runner import Backoff, BatchRunner
from consumers.trainer import Trainer
from models.journeymap import load_journey_map
from service.bus import (
    ensure_parcours_topics,
    make_consumer,
    make_producer,
    samples_dead_letter_topic,
)
from service.errors import BusUnavailable
from service.learning import fresh_training, snapshot_store
from service.metrics import RunnerMetrics, TrainerMetrics
from service.settings import Settings
from service.store import connect_redis

logger = logging.getLogger(__name__)


async def run_trainer(
    settings: Settings, stop: asyncio.Event, registry: CollectorRegistry = REGISTRY
) -> None:
    """Learn the samples topic and publish model snapshots until `stop` is set."""
    kafka, models = settings.kafka, settings.models
    journey_map = load_journey_map(settings.journey.map)
    try:
        if kafka.create_topics:
            await ensure_parcours_topics(settings)
    except (KafkaError, OSError) as exc:
        raise BusUnavailable(f"cannot reach Kafka at {kafka.bootstrap}: {exc!r}") from exc
    metrics = TrainerMetrics(registry)
    runner_metrics = RunnerMetrics(registry)
    if models.trainer_metrics_port:
        start_http_server(models.trainer_metrics_port, registry=registry)
    redis = connect_redis(
        settings.redis.url,
        socket_timeout_s=settings.redis.socket_timeout_s,
        max_connections=8,
    )
    producer = make_producer(kafka)
    consumer = make_consumer(kafka, group_id=models.trainer_group)
    try:
        await producer.start()
    except (KafkaError, OSError) as exc:
        await producer.stop()
        await redis.aclose()
        raise BusUnavailable(f"cannot reach Kafka at {kafka.bootstrap}: {exc!r}") from exc
    try:
        dead_letters = DeadLetterSink(
            producer,
            samples_dead_letter_topic(settings),
            group=models.trainer_group,
            timeout_s=kafka.produce_timeout_s,
        )
        trainer = Trainer(
            lambda: fresh_training(models, journey_map),
            snapshot_store(redis, settings.redis),
            dead_letters,
            metrics,
            every_samples=models.snapshot_every_samples,
            every_s=models.snapshot_every_s,
        )
        backoff = Backoff(
            settings.consumer.retry_backoff_initial_s, settings.consumer.retry_backoff_max_s
        )
        runner = BatchRunner(
            consumer, trainer, runner_metrics, max_batch=kafka.max_batch, backoff=backoff
        )
        consumer.subscribe([models.samples_topic], listener=runner.listener())
        await consumer.start()
        logger.info(
            "trainer started: topic %s, group %s", models.samples_topic, models.trainer_group
        )
        await runner.run(stop)
        if trainer.state.offsets:
            await trainer.idle_flush()
    finally:
        await consumer.stop()
        await producer.stop()
        await redis.aclose()
        logger.info("trainer stopped")
