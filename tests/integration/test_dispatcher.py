"""The dispatcher against real receivers on loopback that fail, hang, and recover."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import orjson
import pytest

from models.webhooks import delivery_id
from service.settings import Settings
from tests.conftest import awake_map, make_settings
from tests.integration.api_fixtures import running_api
from tests.integration.dispatch_fixtures import (
    Dispatch,
    dispatch_fixture,
    dispatching,
    triggers,
)
from tests.receiver import DROP, HANG, Behaviour, Receiver
from tests.support import read_until_quiet, wait_until

LOCAL = {"allow_http": True, "allow_private_targets": True}


def load_journey_map_text(name: str) -> str:
    return resources.files("models.maps").joinpath(f"{name}.yaml").read_text("utf-8")


"""The receivers run on loopback over http: development settings."""

__all__ = ["dispatch_fixture"]


@pytest.fixture
def settings(kafka_bootstrap: str, redis_url: str) -> Settings:
    return make_settings(
        kafka_bootstrap, redis_url, webhooks={**LOCAL, "breaker_failures": 4},
        journey_map=awake_map(),
    )  # fmt: skip


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

    def counted() -> bool:  # once its log line is written, just after the receiver's 2xx
        return (
            dispatch.sample("parcours_webhook_deliveries_total", outcome="delivered") >= 50
            and dispatch.sample("parcours_webhook_delivery_lag_seconds_count") >= 50
        )

    await wait_until(counted, timeout_s=10)
    assert dispatch.sample("parcours_webhook_attempts_total", result="5xx") >= 4


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


async def test_dispatcher_dead_letters_then_api_redelivers_with_the_same_delivery_id(
    dispatch: Dispatch,
) -> None:
    receiver = await dispatch.receiver(Receiver(default=Behaviour(410)))
    sub = await dispatch.subscribe(receiver)
    [trigger] = triggers(1)
    dead_id = delivery_id(trigger.id, sub.id)
    dispatch.start()
    await dispatch.send([trigger])

    await wait_until(lambda: dispatch.deliveries.dead(sub.id, dead_id), timeout_s=30)
    assert len(receiver.requests) == 1, "a 4xx is not retried"
    webhooks = dispatch.settings.webhooks
    [letter] = await read_until_quiet(
        dispatch.settings.kafka.bootstrap or "", webhooks.dead_letter_topic, 4
    )
    body = orjson.loads(letter.value)
    assert (body["delivery_id"], body["attempts"], body["last_status"]) == (dead_id, 1, 410)
    assert body["trigger"]["id"] == trigger.id
    assert body["subscription_id"] == sub.id

    receiver.default = Behaviour(200)
    async with running_api(dispatch.settings) as api:
        unknown = await api.client.post(f"/v1/webhooks/{sub.id}/deliveries/abc123:redeliver")
        again = await api.client.post(f"/v1/webhooks/{sub.id}/deliveries/{dead_id}:redeliver")
        listing = await api.client.get(f"/v1/webhooks/{sub.id}/deliveries")
        health = await api.client.get(f"/v1/webhooks/{sub.id}/health")
        missing = await api.client.get("/v1/webhooks/nope/deliveries")

    assert unknown.status_code == 404
    assert again.status_code == 202, again.text
    assert again.json()["status"] == "delivered"
    assert [r.delivery_id for r in receiver.delivered()] == [dead_id]
    assert receiver.delivered()[0].verifies(sub.secret)
    attempts = listing.json()["deliveries"]
    assert [(a["outcome"], a["status"]) for a in attempts] == [
        ("delivered", 200),
        ("dead_lettered", 410),
    ]
    assert {a["delivery_id"] for a in attempts} == {dead_id}
    assert health.json()["state"] == "closed"
    assert missing.status_code == 404
    assert await dispatch.deliveries.dead(sub.id, dead_id) is None


async def test_dispatcher_breaker_opens_parks_without_burning_attempts_and_recovers(
    kafka_bootstrap: str, redis_url: str
) -> None:
    settings = make_settings(
        kafka_bootstrap, redis_url,
        webhooks={
            **LOCAL, "breaker_failures": 3, "breaker_cooldown_s": 1.0, "max_attempts": 6,
            "concurrency": 4,  # at most this many attempts are in flight when the receiver fails
        },
        journey_map=awake_map(),
    )  # fmt: skip
    async with dispatching(settings) as dispatch:
        receiver = await dispatch.receiver(Receiver(default=Behaviour(503)))
        sub = await dispatch.subscribe(receiver)
        sent = triggers(30)
        dispatch.start()
        await dispatch.send(sent)

        breaker = "parcours_webhook_breaker_state"
        await wait_until(lambda: dispatch.sample(breaker, subscription=sub.id) == 2, timeout_s=30)
        async with running_api(dispatch.settings) as api:
            health = (await api.client.get(f"/v1/webhooks/{sub.id}/health")).json()
        assert health["state"] == "open"
        await asyncio.sleep(1.5)
        tried = len(receiver.requests)
        assert tried < 30, f"{tried} attempts: an open breaker lets deliveries wait untried"
        assert dispatch.sample("parcours_webhook_parked_total", reason="breaker_open") > 0

        receiver.default = Behaviour(200)
        await wait_until(lambda: len(receiver.delivered_triggers()) == 30, timeout_s=60)
        assert dispatch.sample(breaker, subscription=sub.id) == 0
        assert dispatch.sample("parcours_webhook_dead_lettered_total", reason="exhausted") == 0
        await wait_until(lambda: _nothing_parked(dispatch), timeout_s=30)


async def _nothing_parked(dispatch: Dispatch) -> bool:
    return await dispatch.deliveries.parked_count() == 0


async def test_dispatcher_waits_as_long_as_retry_after_says(dispatch: Dispatch) -> None:
    receiver = await dispatch.receiver(
        Receiver(script=deque([Behaviour(429, retry_after="1"), Behaviour(503)]))
    )
    await dispatch.subscribe(receiver)
    dispatch.start()
    await dispatch.send(triggers(1))

    await wait_until(lambda: receiver.delivered(), timeout_s=30)

    first, second, third = (r.at for r in receiver.requests)
    assert second - first >= 0.95, "Retry-After: 1 was honoured"
    assert third - second < 0.9, "a 503 without Retry-After backs off briefly (test settings)"


async def test_dispatcher_holds_capped_triggers_in_quiet_hours_but_not_the_others(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    start, end = now - timedelta(hours=1), now + timedelta(hours=1)
    text = load_journey_map_text("retail").replace(
        'quiet_hours: {start: "21:00", end: "08:00", timezone: UTC}',
        f'quiet_hours: {{start: "{start:%H:%M}", end: "{end:%H:%M}", timezone: UTC}}',
    )
    map_file = tmp_path / "quiet.yaml"
    map_file.write_text(text)
    settings = make_settings(kafka_bootstrap, redis_url, webhooks=LOCAL)
    settings = settings.model_copy(
        update={"journey": settings.journey.model_copy(update={"map": str(map_file)})}
    )
    async with dispatching(settings) as dispatch:
        receiver = await dispatch.receiver()
        await dispatch.subscribe(receiver)
        capped = triggers(3)  # cart.abandoned: capped in the map, so quiet hours apply
        urgent = triggers(3, "customer.converted")
        dispatch.start()
        await dispatch.send(capped + urgent)

        await wait_until(lambda: len(receiver.delivered_triggers()) == 3, timeout_s=60)
        await wait_until(
            lambda: dispatch.sample("parcours_webhook_parked_total", reason="quiet_hours") == 3
        )
        await asyncio.sleep(0.5)
        assert receiver.delivered_triggers() == {t.id for t in urgent}
        assert await dispatch.deliveries.parked_count() == 3


async def test_deleting_a_subscription_drops_its_queued_deliveries_and_commits_them(
    kafka_bootstrap: str, redis_url: str
) -> None:
    # A hung receiver holds its lane's slots; deleting the subscription must not leave the
    # trigger records it was working on holding back the partitions' commits.
    settings = make_settings(
        kafka_bootstrap, redis_url,
        webhooks={**LOCAL, "timeout_s": 60.0, "concurrency": 2, "subscriptions_refresh_s": 0.2},
        journey_map=awake_map(),
    )  # fmt: skip
    async with dispatching(settings) as dispatch:
        hanging = await dispatch.receiver(Receiver(default=HANG))
        sub = await dispatch.subscribe(hanging)
        dispatch.start()
        sent = triggers(20, tag="doomed-")
        await dispatch.send(sent)
        await wait_until(lambda: len(hanging.requests) == 2, timeout_s=30)
        assert sum((await dispatch.committed()).values()) < len(sent)

        assert await dispatch.subscriptions.delete(sub.id)

        async def all_committed() -> bool:
            return sum((await dispatch.committed()).values()) == len(sent)

        await wait_until(all_committed, timeout_s=30)  # well before the 60 s attempt timeout
        assert dispatch.sample("parcours_webhook_deliveries_total", outcome="dropped") == 20
        assert len(hanging.requests) == 2, "nothing more goes to a deleted subscription"
