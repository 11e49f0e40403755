"""`parcours consume`: the state consumer process, wired from settings."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from consumers.analytics_recording import analytics_recording
from consumers.catalog_learning import CatalogLearning
from consumers.deadletter import DeadLetterSink
from consumers.experimenting import Experimenting
from consumers.labelling import Labelling, SampleSink
from consumers.state_updater import StateUpdater
from consumers.triggering import Triggering
from consumers.worker import run_handler, worker_io
from models.journeymap import JourneyMap
from models.trigger_rules import Caps
from service.catalog import catalog_store
from service.experiments import ExperimentBook, ExperimentStore
from service.journey import build_decoder, build_fold
from service.learning import build_labeler, live_scorer
from service.metrics import ConsumerMetrics, ModelMetrics
from service.scoring import LiveScorer
from service.settings import Settings
from service.store import JourneyStore, RedisClient, journey_store

logger = logging.getLogger(__name__)


async def run_state_consumer(
    settings: Settings, stop: asyncio.Event, registry: CollectorRegistry = REGISTRY
) -> None:
    """Consume the events topic into journey state until `stop` is set."""
    kafka, journey = settings.kafka, settings.journey
    fold = build_fold(journey)
    decoder = build_decoder(journey, fold.map)
    metrics = ConsumerMetrics(registry)
    if settings.consumer.metrics_port:
        start_http_server(settings.consumer.metrics_port, registry=registry)
    group = kafka.consumer_group
    async with worker_io(
        settings,
        group=group,
        max_redis_connections=settings.redis.max_connections,
        registry=registry,
    ) as io:
        store = journey_store(io.redis, settings.redis)
        dead_letters = DeadLetterSink(
            io.producer, kafka.dead_letter_topic, group=group, timeout_s=kafka.produce_timeout_s
        )
        scorer = None
        experimenting = None
        if settings.models.enabled:
            scorer = live_scorer(
                store.redis, settings.redis, settings.models, fold.map, ModelMetrics(registry)
            )
            experimenting = _experimenting(settings, io.redis, metrics, fold.map, scorer)
        triggering = None
        if settings.triggers.enabled:
            triggering = Triggering(
                io.producer,
                settings.triggers.topic,
                metrics,
                caps=Caps(fold.map.trigger_caps),
                at_risk_threshold=settings.triggers.at_risk_threshold,
                timeout_s=kafka.produce_timeout_s,
                experimenting=experimenting,
            )
        labelling = None
        if scorer is not None:
            labelling = _labelling(
                settings, store, io.producer, metrics, scorer, triggering, experimenting
            )
        catalog = None
        if settings.recommend.catalog_enabled:
            catalog = CatalogLearning(
                catalog_store(io.redis, settings.redis.key_prefix, settings.recommend),
                metrics,
                max_basket=settings.recommend.max_basket,
            )
        analytics = None
        if settings.analytics.enabled:
            analytics = analytics_recording(settings, io.redis, metrics, fold.map)
        updater = StateUpdater(
            store,
            decoder,
            fold,
            dead_letters,
            metrics,
            max_conflict_retries=settings.consumer.max_conflict_retries,
            chunk_records=settings.consumer.chunk_records,
            labelling=labelling,
            catalog=catalog,
            triggering=triggering,
            analytics=analytics,
            experimenting=experimenting,
        )
        logger.info(
            "state consumer starting: topic %s, group %s, journey map %s",
            kafka.events_topic,
            group,
            fold.map.name,
        )
        await run_handler(settings, io.consumer, updater, metrics, kafka.events_topic, stop)
    logger.info("state consumer stopped")


def _labelling(
    settings: Settings,
    store: JourneyStore,
    producer: AIOKafkaProducer,
    metrics: ConsumerMetrics,
    scorer: LiveScorer,
    triggering: Triggering | None,
    experimenting: Experimenting | None,
) -> Labelling:
    models = settings.models
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
        triggering=triggering,
        experimenting=experimenting,
    )


def _experimenting(
    settings: Settings,
    redis: RedisClient,
    metrics: ConsumerMetrics,
    journey_map: JourneyMap,
    scorer: LiveScorer,
) -> Experimenting:
    """Experiments decide with the served snapshot's bandits and resolve with the labels."""
    config = settings.experiments
    book = ExperimentBook(
        ExperimentStore(redis, prefix=settings.redis.key_prefix),
        refresh_s=config.refresh_s,
        initial_stage=journey_map.initial_stage,
    )
    return Experimenting(
        book,
        lambda: scorer.training.experiments,
        metrics,
        holdout=config.holdout,
        holdout_window_ms=config.holdout_window_s * 1000,
        holdout_success=[config.holdout_success],
    )
