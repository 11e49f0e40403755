"""The dispatcher against real receivers on loopback that fail, hang, and recover."""

from __future__ import annotations

import asyncio
import time
from collections import deque

import orjson
import pytest

from models.webhooks import delivery_id
from service.settings import Settings
from tests.conftest import make_settings
from tests.integration.dispatch_fixtures import Dispatch, dispatch_fixture, triggers
from tests.receiver import DROP, HANG, Behaviour, Receiver
from tests.support import read_until_quiet, wait_until

__all__ = ["dispatch_fixture"]


@pytest.fixture
def settings(kafka_bootstrap: str, redis_url: str) -> Settings:
    return make_settings(kafka_bootstrap, redis_url, webhooks={"breaker_failures": 4})


async def test_dispatcher_flaky_receiver_gets_every_trigger_signed_with_stable_ids(
    dispatch: Dispatch,
) -> None:
    flaky = await dispatch.receiver(
        Receiver(script=deque([Behaviour(503), DROP, Behaviour(429, retry_after="0")] * 4))
    )
    carts = await dispatch.receiver()
    everything = await dispatch.subscribe(flaky, secret="flaky-secret")
    only_carts = await dispatch.subscribe(carts, ["cart.abandoned"], secret="cart-secret")
    sent = triggers(20) + triggers(10, "customer.converted")
    dispatch.start()
    await dispatch.send(sent)

    await wait_until(lambda: len(flaky.delivered_triggers()) == 30, timeout_s=60)
    await wait_until(lambda: len(carts.delivered_triggers()) == 20, timeout_s=60)

    assert flaky.delivered_triggers() == {t.id for t in sent}
    assert carts.delivered_triggers() == {t.id for t in sent if t.type == "cart.abandoned"}
    assert len(flaky.requests) > 30, "the scripted failures were retried"
    for receiver, sub in ((flaky, everything), (carts, only_carts)):
        for request in receiver.requests:
            assert request.verifies(sub.secret)
            assert request.delivery_id == delivery_id(request.trigger_id, sub.id)
            assert request.headers["parcours-trigger-id"] == request.trigger_id
            assert request.headers["parcours-trigger-type"] == orjson.loads(request.body)["type"]
            assert request.headers["content-type"] == "application/json"
            assert request.headers["user-agent"].startswith("Parcours-Webhooks/")
    assert dispatch.sample("parcours_webhook_deliveries_total", outcome="delivered") >= 50
    assert dispatch.sample("parcours_webhook_attempts_total", result="5xx") >= 4
    assert dispatch.sample("parcours_webhook_delivery_lag_seconds_count") >= 50


async def test_dispatcher_hanging_receiver_does_not_delay_a_healthy_one(
    dispatch: Dispatch,
) -> None:
    hanging = await dispatch.receiver(Receiver(default=HANG))
    healthy = await dispatch.receiver()
    stuck = await dispatch.subscribe(hanging)
    await dispatch.subscribe(healthy)
    dispatch.start()
    await dispatch.send(triggers(1, tag="warm-up"))
    await wait_until(lambda: healthy.delivered_triggers(), timeout_s=60)
    waves = []

    for wave in range(5):
        sent_at = time.monotonic()
        await dispatch.send(triggers(20, tag=f"w{wave}-"))
        ids = {t.id for t in triggers(20, tag=f"w{wave}-")}
        await wait_until(lambda ids=ids: ids <= healthy.delivered_triggers(), timeout_s=30)
        arrived = max(r.at for r in healthy.delivered() if r.trigger_id in ids)
        waves.append(arrived - sent_at)

    timeout_s = dispatch.settings.webhooks.timeout_s
    assert max(waves) < timeout_s, f"healthy deliveries took {waves}s; the hang lasts {timeout_s}s"
    assert hanging.requests, "the hanging receiver was tried"
    breaker = "parcours_webhook_breaker_state"
    await wait_until(lambda: dispatch.sample(breaker, subscription=stuck.id) == 2, timeout_s=30)
    assert await dispatch.deliveries.parked_count() > 0, "the stuck deliveries wait in Redis"

    async def all_committed() -> bool:
        return sum((await dispatch.committed()).values()) == 101

    await wait_until(all_committed, timeout_s=30)
