"""An in-process dispatcher against the real broker and Redis, and receivers to send to.

Import `dispatch_fixture` into a test module for the `dispatch` fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from consumers.dispatcher_worker import run_dispatcher
from models.triggers import Trigger, TriggerType, trigger_id
from models.webhooks import Subscription
from service.bus import ensure_parcours_topics
from service.deliveries import DeliveryStore
from service.settings import Settings
from service.store import connect_redis
from service.subscriptions import SubscriptionStore
from tests.receiver import Receiver
from tests.support import committed, produce


@dataclass
class Dispatch:
    settings: Settings
    redis: Redis
    subscriptions: SubscriptionStore
    deliveries: DeliveryStore
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    receivers: list[Receiver] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def receiver(self, receiver: Receiver | None = None) -> Receiver:
        receiver = receiver or Receiver()
        await receiver.start()
        self.receivers.append(receiver)
        return receiver

    async def subscribe(
        self, receiver: Receiver, triggers: Sequence[TriggerType] = (), secret: str = "s3cret"
    ) -> Subscription:
        sub = Subscription(f"wh-{uuid.uuid4().hex[:8]}", receiver.url, frozenset(triggers), secret)
        await self.subscriptions.create(sub)
        return sub

    def start(self) -> None:
        self._task = asyncio.create_task(run_dispatcher(self.settings, self._stop, self.registry))

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 30)

    async def send(self, triggers: Sequence[Trigger]) -> dict[int, int]:
        topic = self.settings.triggers.topic
        messages = [(t.customer_id.encode(), t.to_json()) for t in triggers]
        return await produce(self.settings.kafka.bootstrap or "", topic, messages)

    async def committed(self) -> dict[int, int]:
        webhooks, kafka = self.settings.webhooks, self.settings.kafka
        return await committed(
            kafka.bootstrap or "", webhooks.dispatcher_group, self.settings.triggers.topic,
            kafka.partitions,
        )  # fmt: skip

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels or None) or 0.0


def triggers(count: int, kind: TriggerType = "cart.abandoned", tag: str = "") -> list[Trigger]:
    return [
        Trigger(
            trigger_id(kind, f"c-{i % 7}", f"{tag}{i}"),
            kind,
            f"c-{i % 7}",
            "retail",
            1_700_000_000_000 + i,
            {"cart": {"value": 10.0 + i}, "stage": "decision"},
        )
        for i in range(count)
    ]


@pytest.fixture(name="dispatch")
async def dispatch_fixture(settings: Settings) -> AsyncIterator[Dispatch]:
    async with dispatching(settings) as dispatch:
        yield dispatch


@contextlib.asynccontextmanager
async def dispatching(settings: Settings) -> AsyncIterator[Dispatch]:
    """A dispatcher (not started yet) with its stores; stops it and the receivers on exit."""
    await ensure_parcours_topics(settings)
    redis = connect_redis(settings.redis.url, socket_timeout_s=1.0, max_connections=8)
    prefix = settings.redis.key_prefix
    dispatch = Dispatch(
        settings,
        redis,
        SubscriptionStore(redis, prefix=prefix),
        DeliveryStore(redis, prefix=prefix, log_length=500, dead_kept_s=3600),
    )
    try:
        yield dispatch
    finally:
        with contextlib.suppress(TimeoutError):
            await dispatch.stop()
        for receiver in dispatch.receivers:
            await receiver.stop()
        await redis.aclose()
