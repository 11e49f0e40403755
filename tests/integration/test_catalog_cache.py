"""The API's catalog cache: the same candidates as the exact in-Redis read, fewer calls."""

from __future__ import annotations

import dataclasses
import random

import pytest
from redis.exceptions import ResponseError

from models.catalog import CatalogUpdate
from models.recommend import accessories_from, seeds_of
from service.catalog import CatalogRead, CatalogStore
from service.catalog_cache import CatalogCache
from tests.integration.catalog_fixtures import (
    CATEGORIES,
    DAY,
    ITEMS,
    T0,
    Catalogs,
    catalog_fixture,  # noqa: F401 - the `catalog` fixture
    journey,
    update_stream,
)

WINDOW = 3 * DAY


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _calls(catalog: Catalogs) -> int:
    stats = await catalog.redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_cached_candidates_equal_the_exact_read_for_random_journeys(
    catalog: Catalogs, seed: int
) -> None:
    rng = random.Random(seed)
    store, _ = catalog.pair(top_k=8)
    await store.learn(update_stream(rng, carts=60, span_ms=10 * DAY))
    cache = CatalogCache(
        store, ttl_s=60, max_entries=1000, per_seed=5, min_support=0.3, trending=40
    )
    for n in range(12):
        state = journey(
            cart=rng.sample(ITEMS, rng.randint(0, 3)),
            bought=[(p, T0 + rng.randrange(20 * DAY)) for p in rng.sample(ITEMS, 3)],
            last_event_at=T0 + 20 * DAY,
            category_views={c: rng.randint(1, 3) for c in rng.sample(CATEGORIES, 2)},
        )
        key = f"c{n}"
        await catalog.put_journey(key, state)
        product = rng.choice([None, *ITEMS])
        [exact] = await store.read(
            [
                CatalogRead(
                    journey_key=catalog.journey_key(key), product_id=product, max_seeds=4,
                    per_seed=5, min_support=0.3, bought_window_ms=WINDOW, accessories=6,
                    trending=6,
                )
            ]
        )  # fmt: skip
        plan = seeds_of(state, product, None, max_seeds=4, bought_window_ms=WINDOW)
        neighbours, trending = await cache.fetch([s for s, _ in plan.seeds], [None, plan.category])

        cached = accessories_from(plan, neighbours, 6)
        assert [(a.product_id, a.seed, a.seed_kind) for a in cached] == [
            (a.product_id, a.seed, a.seed_kind) for a in exact.accessories
        ]
        assert [a.score for a in cached] == pytest.approx([a.score for a in exact.accessories])
        assert plan.category == exact.category
        top = [(i, s) for i, s in trending[None] if i not in plan.cart][:6]
        assert [i for i, _ in top] == [i for i, _ in exact.trending]
        assert [s for _, s in top] == pytest.approx([s for _, s in exact.trending])
        assert cache.clock_ms == exact.clock_ms


async def test_cache_serves_fresh_entries_without_redis_and_refetches_stale_ones(
    catalog: Catalogs,
) -> None:
    store, _ = catalog.pair()
    await store.learn(update_stream(random.Random(9), carts=10, span_ms=DAY))
    clock = Clock()
    cache = CatalogCache(
        store, ttl_s=5, max_entries=2, per_seed=5, min_support=0.0, trending=5, clock=clock
    )

    before = await _calls(catalog)
    first = await cache.fetch(["sku:1", "sku:2"], [None])
    clock.now = 4.9
    again = await cache.fetch(["sku:1", "sku:2"], [None])
    assert await _calls(catalog) == before + 1  # the second answer came from memory
    assert again == first

    clock.now = 5.0
    await cache.fetch(["sku:1"], [None])
    assert await _calls(catalog) == before + 2  # stale: fetched again

    await cache.fetch(["sku:3"], [])  # a third item: the oldest (sku:2) is dropped
    await cache.fetch(["sku:2"], [])
    assert await _calls(catalog) == before + 4


def _later(updates: list[CatalogUpdate], by_ms: int) -> list[CatalogUpdate]:
    """The same lessons, newer: past every fence and clock the first ones set."""
    return [
        dataclasses.replace(u, offset=u.offset + 100_000, at_ms=u.at_ms + by_ms) for u in updates
    ]


async def _serving_stale(
    catalog: Catalogs, rng: random.Random, carts: int
) -> tuple[CatalogStore, Clock, CatalogCache]:
    """A catalog learned from `carts` random carts, and a cache of it on a test clock: fresh
    for 5 s, then served stale for 60 s more."""
    store, _ = catalog.pair()
    await store.learn(update_stream(rng, carts=carts, span_ms=DAY))
    clock = Clock()
    cache = CatalogCache(
        store, ttl_s=5, stale_s=60, max_entries=100, per_seed=5, min_support=0.0,
        trending=5, clock=clock,
    )  # fmt: skip
    return store, clock, cache


async def test_stale_entries_are_served_at_once_and_refetched_together_in_the_background(
    catalog: Catalogs,
) -> None:
    rng = random.Random(4)
    store, clock, cache = await _serving_stale(catalog, rng, carts=20)
    items = ["sku:1", "sku:4", "sku:5"]
    first = await cache.fetch(items, [None])
    first_clock = cache.clock_ms
    await store.learn(_later(update_stream(rng, carts=20, span_ms=DAY), 2 * DAY))
    now = await store.neighbourhood(items, [None], per_seed=5, min_support=0.0, trending=5)
    assert (now.neighbours, now.trending, now.clock_ms) != (*first, first_clock)

    before = await _calls(catalog)
    clock.now = 30.0  # past the TTL, inside the stale window
    served = await cache.fetch(items, [None])
    assert served == first  # answered from memory, without waiting for Redis
    assert cache.clock_ms == first_clock
    await cache.settled()
    assert await _calls(catalog) == before + 1  # every stale entry in one background call
    assert await cache.fetch(items, [None]) == (now.neighbours, now.trending)
    assert cache.clock_ms == now.clock_ms
    await cache.settled()
    assert await _calls(catalog) == before + 1  # all fresh again: no call at all


async def test_a_missing_entry_is_fetched_before_answering_with_the_stale_ones_riding_along(
    catalog: Catalogs,
) -> None:
    rng = random.Random(5)
    store, clock, cache = await _serving_stale(catalog, rng, carts=20)
    await cache.fetch(["sku:1"], [None])
    await store.learn(_later(update_stream(rng, carts=20, span_ms=DAY), 2 * DAY))
    now = await store.neighbourhood(
        ["sku:1", "sku:2"], [None], per_seed=5, min_support=0.0, trending=5
    )

    before = await _calls(catalog)
    clock.now = 30.0
    stale = await cache.fetch(["sku:1"], [None])  # served; its refetch not started yet
    neighbours, trending = await cache.fetch(["sku:2"], [None])
    assert neighbours == {"sku:2": now.neighbours["sku:2"]}
    assert trending == {None: now.trending[None]}  # the stale list rode along, refreshed
    assert await cache.fetch(["sku:1"], []) == ({"sku:1": now.neighbours["sku:1"]}, {})
    assert stale[0] != {"sku:1": now.neighbours["sku:1"]}
    await cache.settled()
    assert await _calls(catalog) == before + 1  # nothing was left for the background

    clock.now = 30.0 + 66.0  # past TTL and stale window: fetched before answering
    await cache.fetch(["sku:1"], [])
    assert await _calls(catalog) == before + 2


async def test_a_failed_background_refetch_keeps_serving_until_the_entry_expires(
    catalog: Catalogs, caplog: pytest.LogCaptureFixture
) -> None:
    _, clock, cache = await _serving_stale(catalog, random.Random(9), carts=10)
    first = await cache.fetch(["sku:1"], [])
    key = f"{catalog.prefix}:{{catalog}}:pairs:sku:1"
    await catalog.redis.rename(key, f"{key}:kept")
    await catalog.redis.set(key, "not a sorted set")  # the script now fails on this item

    clock.now = 10.0
    with caplog.at_level("WARNING", logger="service.catalog_cache"):
        assert await cache.fetch(["sku:1"], []) == first
        await cache.settled()
    assert "refetch of 1 entries failed" in caplog.text
    clock.now = 20.0
    assert await cache.fetch(["sku:1"], []) == first  # still servable, tried again
    await cache.settled()

    clock.now = 70.0  # too old to serve: the request sees the failure
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await cache.fetch(["sku:1"], [])
    await catalog.redis.rename(f"{key}:kept", key)
    assert await cache.fetch(["sku:1"], []) == first  # Redis fixed, nothing changed meanwhile
