"""`parcours consume`: the state consumer process, wired from settings."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from consumers.deadletter import DeadLetterSink
from consumers.labelling import Labelling, SampleSink
from consumers.runner import Backoff, BatchRunner
from consumers.state_updater import StateUpdater
from models.journeymap import JourneyMap
from service.bus import ensure_parcours_topics, make_consumer, make_producer
from service.errors import BusUnavailable
from service.journey import build_decoder, build_fold
from service.learning import build_labeler, live_scorer
from service.metrics import ConsumerMetrics, ModelMetrics
from service.settings import Settings
from service.store import JourneyStore, connect_redis, journey_store

logger = logging.getLogger(__name__)


async def run_state_consumer(
    settings: Settings, stop: asyncio.Event, registry: CollectorRegistry = REGISTRY
) -> None:
    """Consume the events topic into journey state until `stop` is set."""
    kafka, journey = settings.kafka, settings.journey
    fold = build_fold(journey)
    decoder = build_decoder(journey, fold.map)
    try:
        if kafka.create_topics:
            await ensure_parcours_topics(settings)
    except (KafkaError, OSError) as exc:
        raise BusUnavailable(f"cannot reach Kafka at {kafka.bootstrap}: {exc!r}") from exc
    metrics = ConsumerMetrics(registry)
    if settings.consumer.metrics_port:
        start_http_server(settings.consumer.metrics_port)
    redis = connect_redis(
        settings.redis.url,
        socket_timeout_s=settings.redis.socket_timeout_s,
        max_connections=settings.redis.max_connections,
    )
    store = journey_store(
        redis, prefix=settings.redis.key_prefix, ttl_days=settings.redis.journey_ttl_days
    )
    producer = make_producer(kafka)
    consumer = make_consumer(kafka, group_id=kafka.consumer_group)
    try:
        await producer.start()
    except (KafkaError, OSError) as exc:
        await producer.stop()
        await redis.aclose()
        raise BusUnavailable(f"cannot reach Kafka at {kafka.bootstrap}: {exc!r}") from exc
    try:
        dead_letters = DeadLetterSink(
            producer,
            kafka.dead_letter_topic,
            group=kafka.consumer_group,
            timeout_s=kafka.produce_timeout_s,
        )
        updater = StateUpdater(
            store,
            decoder,
            fold,
            dead_letters,
            metrics,
            max_conflict_retries=settings.consumer.max_conflict_retries,
            labelling=_labelling(settings, store, producer, metrics, registry, fold.map)
            if settings.models.enabled
            else None,
        )
        backoff = Backoff(
            settings.consumer.retry_backoff_initial_s, settings.consumer.retry_backoff_max_s
        )
        runner = BatchRunner(consumer, updater, metrics, max_batch=kafka.max_batch, backoff=backoff)
        consumer.subscribe([kafka.events_topic], listener=runner.listener())
        await consumer.start()
        logger.info(
            "state consumer started: topic %s, group %s, journey map %s",
            kafka.events_topic,
            kafka.consumer_group,
            fold.map.name,
        )
        await runner.run(stop)
    finally:
        await consumer.stop()
        await producer.stop()
        await redis.aclose()
        logger.info("state consumer stopped")


def _labelling(
    settings: Settings,
    store: JourneyStore,
    producer: AIOKafkaProducer,
    metrics: ConsumerMetrics,
    registry: CollectorRegistry,
    journey_map: JourneyMap,
) -> Labelling:
    models = settings.models
    scorer = live_scorer(store.redis, settings.redis, models, journey_map, ModelMetrics(registry))
    return Labelling(
        build_labeler(models),
        store,
        SampleSink(producer, models.samples_topic, timeout_s=settings.kafka.produce_timeout_s),
        metrics,
        scorer=scorer,
        lateness_ms=int(models.allowed_lateness_s * 1000),
        sweep_batch=models.sweep_batch,
        idle_advance_after_s=models.idle_advance_after_s,
        max_conflict_retries=settings.consumer.max_conflict_retries,
    )
