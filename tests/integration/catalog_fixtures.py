"""The Redis catalog against the real redis-server, and the pure reference it must agree with.

Import `catalog_fixture` into a test module for the `catalog` fixture (a `Catalogs` factory).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import pytest
from redis.asyncio import Redis

from models.catalog import Catalog, CatalogUpdate
from models.cooccurrence import CoOccurrence
from models.state import Cart, CartItem, JourneyState, Purchases, RecentProduct, encode_state
from models.trending import Trending
from service.catalog import CatalogStore

DAY: Final = 86_400_000
HOUR: Final = 3_600_000
T0: Final = 1_569_888_000_000
"""2019-10-01T00:00Z: event times are old on purpose; reads must not look at the wall clock."""


@dataclass
class Catalogs:
    """Builds a Redis catalog and its pure twin with the same parameters, under one prefix."""

    redis: Redis
    prefix: str

    def pair(
        self,
        *,
        pair_half_life_ms: int = 7 * DAY,
        trending_half_life_ms: int | None = 3 * DAY,
        top_k: int = 50,
        top_n: int = 1000,
        min_support: float = 0.0,
    ) -> tuple[CatalogStore, Catalog]:
        store = CatalogStore(
            self.redis,
            prefix=self.prefix,
            pair_half_life_ms=pair_half_life_ms,
            trending_half_life_ms=trending_half_life_ms,
            top_k=top_k,
            top_n=top_n,
        )
        cooc = CoOccurrence(half_life_ms=pair_half_life_ms, top_k=top_k, min_support=min_support)
        return store, Catalog(cooc, Trending(trending_half_life_ms, top_n))

    def journey_key(self, customer: str) -> str:
        return f"{self.prefix}:journey:{customer}"

    async def put_journey(self, customer: str, state: JourneyState, rev: int = 3) -> bytes:
        raw = f"{rev} ".encode() + encode_state(state)
        await self.redis.set(self.journey_key(customer), raw)
        return raw

    async def snapshot(self) -> dict[bytes, Any]:
        """Every catalog key and its full contents, to show what a call changed."""
        found: dict[bytes, Any] = {}
        async for key in self.redis.scan_iter(match=f"{self.prefix}:{{catalog}}:*", count=1000):
            kind = await self.redis.type(key)
            if kind == b"hash":
                found[key] = await self.redis.hgetall(key)
            elif kind == b"zset":
                found[key] = await self.redis.zrange(key, 0, -1, withscores=True)
            else:
                found[key] = await self.redis.get(key)
        return found


@pytest.fixture(name="catalog")
async def catalog_fixture(redis_url: str) -> AsyncIterator[Catalogs]:
    redis = Redis.from_url(redis_url, socket_timeout=5)
    try:
        yield Catalogs(redis, f"test-{uuid.uuid4().hex[:10]}")
    finally:
        await redis.aclose()


ITEMS: Final = [f"sku:{i}" for i in range(30)] + ["ünï:côdé", "漢字", "a b:c", "top", "pairs:x"]
CATEGORIES: Final = ["shoes", "bags", "home:kitchen", "jouets é"]


def update_stream(rng: random.Random, carts: int, span_ms: int) -> list[CatalogUpdate]:
    """Carts built item by item, views and purchases, over `span_ms`, on three partitions."""
    offsets = [0, 0, 0]
    updates: list[CatalogUpdate] = []
    times = sorted(T0 + rng.randrange(span_ms) for _ in range(carts))
    for at in times:
        cart: list[str] = []
        for item in rng.sample(ITEMS, rng.randint(1, 6)):
            p = rng.randrange(3)
            category = rng.choice([*CATEGORIES, None])
            weight = rng.uniform(0.5, 5.0)  # random weights: no ties in popularity
            added = (item,) if rng.random() < 0.8 else ()  # else a view: popularity only
            existing = tuple(reversed(cart)) if added else ()
            popularity = ((item, category, weight),)
            updates.append(CatalogUpdate(p, offsets[p], at, added, existing, popularity))
            offsets[p] += 1
            cart += added
            at += rng.randrange(10 * 60_000)
    return updates


def journey(
    cart: Sequence[str] = (),
    bought: Sequence[tuple[str, int]] = (),
    *,
    last_event_at: int = T0,
    category_views: dict[str, int] | None = None,
) -> JourneyState:
    """A journey with `cart` (in order added) and `bought` (product, time; oldest first)."""
    return JourneyState(
        customer_id="c",
        journey_map="retail",
        stage="consideration",
        stage_entered_at=T0,
        first_event_at=T0,
        last_event_at=last_event_at,
        category_views=category_views or {},
        cart=Cart({p: CartItem(p, 1, 9.5, None, T0) for p in cart}, T0, T0),
        purchases=Purchases(
            count=len(bought), recent_products=[RecentProduct(p, at) for p, at in bought]
        ),
    )
