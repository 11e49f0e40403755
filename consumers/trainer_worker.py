"""`parcours train`: the trainer process, wired from settings."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from consumers.deadletter import DeadLetterSink
from consumers.trainer import Trainer
from consumers.worker import run_handler, worker_io
from models.journeymap import load_journey_map
from service.bus import samples_dead_letter_topic
from service.learning import fresh_training, snapshot_store
from service.metrics import RunnerMetrics, TrainerMetrics
from service.settings import Settings

logger = logging.getLogger(__name__)


async def run_trainer(
    settings: Settings, stop: asyncio.Event, registry: CollectorRegistry = REGISTRY
) -> None:
    """Learn the samples topic and publish model snapshots until `stop` is set."""
    kafka, models = settings.kafka, settings.models
    journey_map = load_journey_map(settings.journey.map)
    metrics = TrainerMetrics(registry, quality_window=models.quality_window)
    if models.trainer_metrics_port:
        start_http_server(models.trainer_metrics_port, registry=registry)
    group = models.trainer_group
    async with worker_io(settings, group=group, max_redis_connections=8, registry=registry) as io:
        dead_letters = DeadLetterSink(
            io.producer,
            samples_dead_letter_topic(settings),
            group=group,
            timeout_s=kafka.produce_timeout_s,
        )
        trainer = Trainer(
            lambda: fresh_training(models, journey_map),
            snapshot_store(io.redis, settings.redis),
            dead_letters,
            metrics,
            every_samples=models.snapshot_every_samples,
            every_s=models.snapshot_every_s,
        )
        logger.info("trainer starting: topic %s, group %s", models.samples_topic, group)
        runner_metrics = RunnerMetrics(registry)
        await run_handler(
            settings, io.consumer, trainer, runner_metrics, models.samples_topic, stop
        )
        await trainer.idle_flush()
    logger.info("trainer stopped")
