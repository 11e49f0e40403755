"""The subscription store on a real redis-server: round trips, ordering, atomic version bumps."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from models.webhooks import Filter, Subscription
from service.errors import StoreUnavailable
from service.settings import Settings
from service.store import connect_redis
from service.subscriptions import SubscriptionExists, SubscriptionStore


def _sub(sub_id: str, created_at: int = 1_000, **fields: object) -> Subscription:
    values: dict[str, object] = {
        "id": sub_id,
        "url": "https://93.184.216.34/hook",
        "triggers": frozenset({"cart.abandoned"}),
        "secret": "s" * 32,
        "created_at": created_at,
    }
    return Subscription(**(values | fields))  # type: ignore[arg-type]


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = connect_redis(settings.redis.url, socket_timeout_s=1.0, max_connections=4)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def store(redis: Redis, settings: Settings) -> SubscriptionStore:
    return SubscriptionStore(redis, prefix=settings.redis.key_prefix)


async def test_store_create_then_get_round_trips_every_field(store: SubscriptionStore) -> None:
    sub = _sub(
        "wh_1",
        triggers=frozenset({"cart.abandoned", "customer.converted"}),
        enabled=False,
        filter=Filter(min_cart_value=25.5, stages=frozenset({"decision", "purchase"})),
        description="CRM: abandoned carts",
    )
    await store.create(sub)

    assert await store.get("wh_1") == sub
    assert await store.get("wh_missing") is None


async def test_store_round_trips_defaults(store: SubscriptionStore) -> None:
    sub = Subscription("wh_1", "https://93.184.216.34/", frozenset(), "k" * 16)
    await store.create(sub)

    assert await store.get("wh_1") == sub


async def test_store_create_refuses_a_taken_id(store: SubscriptionStore) -> None:
    await store.create(_sub("wh_1"))
    before = await store.version()

    with pytest.raises(SubscriptionExists):
        await store.create(_sub("wh_1", url="https://93.184.216.35/"))

    assert (await store.get("wh_1")) == _sub("wh_1")
    assert await store.version() == before


async def test_store_list_orders_by_created_at_then_id(store: SubscriptionStore) -> None:
    for sub_id, at in [("wh_c", 2_000), ("wh_b", 1_000), ("wh_z", 500), ("wh_a", 1_000)]:
        await store.create(_sub(sub_id, at))

    assert [s.id for s in await store.list()] == ["wh_z", "wh_a", "wh_b", "wh_c"]


async def test_store_list_is_empty_at_first(store: SubscriptionStore) -> None:
    assert await store.list() == []
    assert await store.version() == 0


async def test_store_update_replaces_an_existing_subscription_only(
    store: SubscriptionStore,
) -> None:
    await store.create(_sub("wh_1"))
    changed = _sub("wh_1", url="https://93.184.216.35/", enabled=False, secret="n" * 20)

    assert await store.update(changed)
    assert await store.get("wh_1") == changed
    assert not await store.update(_sub("wh_2"))
    assert await store.get("wh_2") is None
    assert [s.id for s in await store.list()] == ["wh_1"]


async def test_store_delete_removes_it_from_get_and_list(store: SubscriptionStore) -> None:
    await store.create(_sub("wh_1"))
    await store.create(_sub("wh_2", 2_000))

    assert await store.delete("wh_1")
    assert not await store.delete("wh_1")
    assert await store.get("wh_1") is None
    assert [s.id for s in await store.list()] == ["wh_2"]


async def test_store_version_moves_on_every_change_and_only_then(
    store: SubscriptionStore,
) -> None:
    versions = [await store.version()]
    await store.create(_sub("wh_1"))
    versions.append(await store.version())
    await store.update(_sub("wh_1", enabled=False))
    versions.append(await store.version())
    await store.delete("wh_1")
    versions.append(await store.version())

    assert versions == sorted(set(versions)), versions
    await store.update(_sub("wh_gone"))
    await store.delete("wh_gone")
    await store.get("wh_1")
    await store.list()
    assert await store.version() == versions[-1]


async def test_store_prefixes_keep_stores_apart(redis: Redis, settings: Settings) -> None:
    ours = SubscriptionStore(redis, prefix=settings.redis.key_prefix)
    theirs = SubscriptionStore(redis, prefix=f"{settings.redis.key_prefix}-other")
    await ours.create(_sub("wh_1"))

    assert await theirs.list() == []
    assert await theirs.version() == 0


async def test_store_keeps_the_documented_layout(redis: Redis, store: SubscriptionStore) -> None:
    await store.create(_sub("wh_1", 1_234))

    assert await redis.type(store.key("wh_1")) == b"string"
    assert await redis.zrange(store.index_key, 0, -1, withscores=True) == [(b"wh_1", 1234.0)]
    assert int(await redis.get(store.version_key)) == 1


async def test_store_unreachable_redis_is_store_unavailable() -> None:
    down = connect_redis("redis://127.0.0.1:1/0", socket_timeout_s=0.5, max_connections=1)
    store = SubscriptionStore(down, prefix="x")
    try:
        for call in (store.list(), store.get("a"), store.version(), store.delete("a")):
            with pytest.raises(StoreUnavailable):
                await call
        with pytest.raises(StoreUnavailable):
            await store.create(_sub("a"))
    finally:
        await down.aclose()
