"""Right of access and erasure: the export holds what Redis holds on a customer; after an
erasure nothing of theirs is left but the hold marker, and their redelivered, replayed or late
events rebuild nothing while it lasts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from models.delivery import AttemptRecord, PendingDelivery
from models.triggers import Trigger
from service.settings import Settings
from tests.integration.api_fixtures import SENTINEL, Api, event, running_api, topic_records
from tests.integration.conftest import Worker
from tests.support import read_until_quiet

GONE, KEPT = "c-gone@example.com", "c-kept"


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with running_api(settings) as running:
        yield running


def _shopping(customer: str, first: int) -> list[dict[str, Any]]:
    at = "2026-11-20T10:{:02d}:00Z"
    cart = {"product_id": "sku-1", "price": 30.0, "quantity": 1}
    return [
        event(first, customer_id=customer, timestamp=at.format(0), type="product_view",
              properties={"product_id": "sku-1", "category": "shoes", "price": 30.0}),
        event(first + 1, customer_id=customer, timestamp=at.format(1), type="add_to_cart",
              properties=cart),
    ]  # fmt: skip


async def _fold_all(api: Api, worker: Worker, sent: list[dict[str, Any]]) -> None:
    posted = await api.client.post("/v1/events", json=sent)
    assert posted.status_code == 202, posted.text
    updater = worker.labelled_updater(analytics=worker.analytics())
    await updater.handle(await topic_records(api.settings))


async def _held_deliveries(api: Api) -> None:
    """A parked and a dead delivery about the erased customer, one parked about the other,
    and attempt-log lines for both."""
    store = api.app.state.context.deliveries

    def pending(customer: str, n: int) -> PendingDelivery:
        trigger = Trigger(f"t-{n}", "cart.abandoned", customer, "retail", 0, {"value": 30.0})
        return PendingDelivery(trigger, "wh_1", f"d{n}", attempts=1)

    await store.park(pending(GONE, 1), due=1e12)
    await store.bury(pending(GONE, 2))
    await store.park(pending(KEPT, 3), due=1e12)
    for n in (2, 3):
        line = AttemptRecord(
            f"d{n}", f"t-{n}", "cart.abandoned", 1, 500, 3.0, None, 0.0, "retrying"
        )
        await store.log("wh_1", line)


async def _everything_mentioning(api: Api, text: str) -> dict[str, bytes]:
    """Every key under the test's prefix whose name or content holds `text`: name -> dump."""
    redis = api.app.state.context.redis
    found: dict[str, bytes] = {}
    async for key in redis.scan_iter(match=f"{api.settings.redis.key_prefix}:*"):
        dumped = await redis.dump(key)
        kind = (await redis.type(key)).decode()
        content = repr(await _read(redis, key, kind)).encode()
        if text.encode() in key or text.encode() in content or text.encode() in dumped:
            found[key.decode()] = content
    return found


async def _read(redis: Any, key: bytes, kind: str) -> Any:
    if kind == "string":
        return await redis.get(key)
    if kind == "hash":
        return await redis.hgetall(key)
    if kind == "zset":
        return await redis.zrange(key, 0, -1)
    if kind == "list":
        return await redis.lrange(key, 0, -1)
    assert kind == "set", kind
    return await redis.smembers(key)


async def test_export_then_erase_leaves_only_the_hold_marker(api: Api, worker: Worker) -> None:
    await _fold_all(api, worker, _shopping(GONE, 0) + _shopping(KEPT, 10))
    await _held_deliveries(api)

    before = await api.client.get(f"/v1/customers/{GONE}/export")
    erased = await api.client.delete(f"/v1/customers/{GONE}")
    left = await _everything_mentioning(api, GONE)
    after = await api.client.get(f"/v1/customers/{GONE}/export")
    journey = await api.client.get(f"/v1/customers/{GONE}/journey")
    kept = await api.client.get(f"/v1/customers/{KEPT}/export")
    live = await api.client.get("/v1/analytics/live")

    exported = before.json()
    assert exported["erased"] is False
    assert exported["journey"]["customer_id"] == GONE
    assert exported["journey"]["cart"]["items"]
    assert exported["label_book"] is not None
    assert exported["analytics_pending"] is not None
    assert [d["delivery_id"] for d in exported["parked_deliveries"]] == ["d1"]
    assert [d["delivery_id"] for d in exported["dead_deliveries"]] == ["d2"]
    assert erased.status_code == 200, erased.text
    assert erased.json() | {"held_until": None} == {
        "customer_id": GONE, "journey": True, "analytics_records": 1, "deliveries": 2,
        "held_until": None,
    }  # fmt: skip
    assert list(left) == [worker.store.key(GONE)]
    assert left[worker.store.key(GONE)].endswith(b" erased'")
    assert after.json() | {"exported_at": None} == {
        "customer_id": GONE, "exported_at": None, "erased": True, "journey": None,
        "label_book": None, "analytics_pending": None, "parked_deliveries": [],
        "dead_deliveries": [], "not_held_here": exported["not_held_here"],
    }  # fmt: skip
    assert journey.status_code == 404
    assert kept.json()["journey"]["customer_id"] == KEPT
    assert [d["delivery_id"] for d in kept.json()["parked_deliveries"]] == ["d3"]
    logged = await api.app.state.context.deliveries.recent("wh_1", 10)
    assert [line["trigger_id"] for line in logged] == ["t-3"]
    assert sum(s["customers"] for s in live.json()["stages"]) == 1
    assert live.json()["open_carts"] == 1


async def test_erased_customers_events_are_dropped_and_counted_while_held(
    api: Api, worker: Worker
) -> None:
    await _fold_all(api, worker, _shopping(GONE, 0))
    await api.client.delete(f"/v1/customers/{GONE}")
    late = [*_shopping(GONE, 20), event(30, customer_id=KEPT)]
    await api.client.post("/v1/events", json=late)
    kafka = api.settings.kafka
    everything = await read_until_quiet(kafka.bootstrap or "", kafka.events_topic, kafka.partitions)
    records = [r for r in everything if r.value != SENTINEL]  # the first events again, and more

    updater = worker.labelled_updater(analytics=worker.analytics())
    await updater.handle(records)

    assert await worker.store.get(GONE) is None
    assert await worker.store.erased(GONE)
    assert (await worker.store.get(KEPT)) is not None
    assert worker.sample("parcours_events_suppressed_total", reason="erased") == 4
    assert list(await _everything_mentioning(api, GONE)) == [worker.store.key(GONE)]


async def test_erasing_an_unknown_customer_holds_them_too(api: Api, worker: Worker) -> None:
    erased = await api.client.delete("/v1/customers/c-never-seen")
    again = await api.client.delete("/v1/customers/c-never-seen")
    await _fold_all(api, worker, _shopping("c-never-seen", 0))

    assert erased.json()["journey"] is False
    assert again.json()["journey"] is False
    assert await worker.store.get("c-never-seen") is None
    assert worker.sample("parcours_events_suppressed_total", reason="erased") == 2


async def test_erasure_expires_after_the_hold(settings: Settings, worker: Worker) -> None:
    privacy = settings.privacy.model_copy(update={"erasure_hold_days": 0.5 / 86_400})
    async with running_api(settings.model_copy(update={"privacy": privacy})) as api:
        await api.client.delete(f"/v1/customers/{GONE}")
        held = await worker.store.erased(GONE)
        ttl_ms = await api.app.state.context.redis.pttl(worker.store.key(GONE))

    assert held
    assert 0 < ttl_ms <= 500
