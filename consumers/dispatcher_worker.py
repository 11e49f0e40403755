"""`parcours dispatch`: the webhook dispatcher process, wired from settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from consumers.dispatch_loop import DispatchLoop
from consumers.dispatcher import Dispatcher
from consumers.webhook_deadletters import WebhookDeadLetters
from consumers.worker import worker_io
from models.journeymap import load_journey_map
from service.deliveries import DeliveryStore
from service.metrics import DispatcherMetrics
from service.settings import Settings
from service.subscriptions import SubscriptionStore
from service.webhook_sender import WebhookSender, make_http_client

logger = logging.getLogger(__name__)


async def run_dispatcher(
    settings: Settings, stop: asyncio.Event, registry: CollectorRegistry = REGISTRY
) -> None:
    """Deliver the triggers topic to webhook subscriptions until `stop` is set."""
    webhooks, prefix = settings.webhooks, settings.redis.key_prefix
    metrics = DispatcherMetrics(registry)
    if webhooks.metrics_port:
        start_http_server(webhooks.metrics_port, registry=registry)
    group = webhooks.dispatcher_group
    async with (
        worker_io(settings, group=group, max_redis_connections=32, registry=registry) as io,
        make_http_client(webhooks) as client,
    ):
        deliveries = DeliveryStore(
            io.redis,
            prefix=prefix,
            log_length=webhooks.delivery_log_length,
            dead_kept_s=webhooks.dead_kept_days * 86_400,
        )
        dead_letters = WebhookDeadLetters(
            io.producer, webhooks.dead_letter_topic, timeout_s=settings.kafka.produce_timeout_s
        )
        journey_map = load_journey_map(settings.journey.map)
        dispatcher = Dispatcher(
            SubscriptionStore(io.redis, prefix=prefix),
            deliveries,
            WebhookSender(client, webhooks),
            dead_letters,
            metrics,
            webhooks,
            quiet_hours=journey_map.quiet_hours,
            quiet_types=frozenset(journey_map.trigger_caps),
        )
        loop = DispatchLoop(
            io.consumer,
            dispatcher,
            metrics,
            max_pending=webhooks.max_pending,
            refresh_s=webhooks.subscriptions_refresh_s,
            drain_s=webhooks.timeout_s + 1.0,
            max_batch=settings.kafka.max_batch,
        )
        io.consumer.subscribe([settings.triggers.topic], listener=loop.listener())
        await io.consumer.start()
        logger.info("dispatcher starting: topic %s, group %s", settings.triggers.topic, group)
        parked = asyncio.create_task(dispatcher.run_parked(stop), name="webhook-parked")
        dispatcher.watch(parked)
        try:
            await loop.run(stop)
        finally:
            parked.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await parked
            await dispatcher.close()
    logger.info("dispatcher stopped")
