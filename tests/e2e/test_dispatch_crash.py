"""SIGKILL `parcours dispatch` mid-stream: every trigger still reaches every receiver."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from models.webhooks import Subscription
from service.bus import ensure_parcours_topics
from service.deliveries import DeliveryStore
from service.store import connect_redis
from service.subscriptions import SubscriptionStore
from tests.conftest import awake_map, make_settings
from tests.e2e.conftest import Role
from tests.integration.dispatch_fixtures import triggers
from tests.receiver import Behaviour, Receiver
from tests.support import produce, settings_env, wait_until

pytestmark = pytest.mark.slow

TRIGGERS = 600


async def test_sigkill_mid_stream_redelivers_every_trigger_at_least_once(
    kafka_bootstrap: str, redis_url: str, roles: list[Role], tmp_path: Path
) -> None:
    settings = make_settings(
        kafka_bootstrap, redis_url, partitions=4,
        webhooks={"allow_http": True, "allow_private_targets": True},  # loopback receivers
        journey_map=awake_map(),
    )  # fmt: skip
    await ensure_parcours_topics(settings)
    redis = connect_redis(settings.redis.url, socket_timeout_s=1.0, max_connections=4)
    prefix = settings.redis.key_prefix
    store = SubscriptionStore(redis, prefix=prefix)
    deliveries = DeliveryStore(redis, prefix=prefix, log_length=10, dead_kept_s=60)
    slow = Receiver(default=Behaviour(delay_s=0.01))
    flaky = Receiver(default=Behaviour(delay_s=0.01))
    flaky.script.extend([Behaviour(503), Behaviour(200), Behaviour(200)] * 100)
    receivers = [slow, flaky]
    for receiver in receivers:
        await receiver.start()
        sub = Subscription(f"wh-{uuid.uuid4().hex[:8]}", receiver.url, frozenset(), "k")
        await store.create(sub)
    sent = triggers(TRIGGERS)
    expected = {t.id for t in sent}
    env = settings_env(settings)

    def start(name: str) -> Role:
        role = Role(["dispatch"], env, tmp_path / f"{name}.log")
        roles.append(role)
        return role

    try:
        first = start("first")
        messages = [(t.customer_id.encode(), t.to_json()) for t in sent]
        await produce(kafka_bootstrap, settings.triggers.topic, messages)
        await wait_until(lambda: len(slow.delivered_triggers()) >= TRIGGERS // 4, timeout_s=120)
        assert len(slow.delivered_triggers()) < TRIGGERS, "the kill must land mid-stream"
        first.kill()
        start("restarted")

        for receiver in receivers:
            await wait_until(lambda r=receiver: r.delivered_triggers() == expected, timeout_s=120)

        async def nothing_parked() -> bool:
            return await deliveries.parked_count() == 0

        await wait_until(nothing_parked, timeout_s=60)
    finally:
        for receiver in receivers:
            await receiver.stop()
        await redis.aclose()
