"""The journey store on a real three-primary Redis Cluster: a batch is written per hash tag,
and conflicts, label books and deadline indexes come back as on standalone Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from service.keyspace import journey_shard
from service.settings import RedisSettings
from service.store import (
    JourneyStore,
    LabelWrite,
    Write,
    journey_store,
    learn_topology,
    redis_from_settings,
)

SHARDS = 16
CUSTOMERS = [f"cust-{i}" for i in range(120)]


@pytest.fixture
async def store(redis_cluster_url: str) -> AsyncIterator[JourneyStore]:
    settings = RedisSettings(
        url=redis_cluster_url, cluster=True, key_prefix=f"t-{uuid.uuid4().hex[:8]}",
        journey_shards=SHARDS,
    )  # fmt: skip
    redis = redis_from_settings(settings)
    await learn_topology(redis)
    yield journey_store(redis, settings)
    await redis.aclose()


def _nodes(store: JourneyStore, keys: list[str]) -> set[str]:
    redis = store.redis
    assert hasattr(redis, "get_node_from_key")
    return {redis.get_node_from_key(key).name for key in keys}


async def test_a_batch_over_every_tag_is_written_with_its_conflicts_mapped_back(
    store: JourneyStore,
) -> None:
    assert {journey_shard(c, SHARDS) for c in CUSTOMERS} == set(range(SHARDS))
    assert await store.save_many([Write(c, b'{"v":1}', 0) for c in CUSTOMERS]) == []
    stale = set(CUSTOMERS[::7])

    writes = [Write(c, b'{"v":2}', 0 if c in stale else 1) for c in CUSTOMERS]
    conflicts = await store.save_many(writes)

    assert conflicts == [i for i, c in enumerate(CUSTOMERS) if c in stale]
    loaded = await store.load_many(CUSTOMERS)
    assert [(s.rev, s.state) for s in loaded] == [
        (1, b'{"v":1}') if c in stale else (2, b'{"v":2}') for c in CUSTOMERS
    ]
    assert len(_nodes(store, [store.key(c) for c in CUSTOMERS])) == 3, "journeys spread out"


async def test_label_books_and_deadlines_across_tags_come_due_earliest_first(
    store: JourneyStore,
) -> None:
    due_at = {c: 1_000 * (len(CUSTOMERS) - i) for i, c in enumerate(CUSTOMERS)}
    writes = [
        Write(c, b"{}", 0, LabelWrite(f"book-{c}".encode(), due_at[c], partition=2))
        for c in CUSTOMERS
    ]
    assert await store.save_many(writes) == []

    earliest = sorted(CUSTOMERS, key=due_at.__getitem__)
    assert await store.due(2, before_ms=10**9, limit=5) == earliest[:5]
    assert await store.due(2, before_ms=due_at[earliest[9]], limit=50) == earliest[:9]
    assert await store.due(3, before_ms=10**9, limit=5) == []
    books = await store.load_many(CUSTOMERS[:3], with_labels=True)
    assert [b.labels for b in books] == [f"book-{c}".encode() for c in CUSTOMERS[:3]]

    resolved = earliest[:4]  # their labels resolved: book deleted, deadline unindexed
    done = [Write(c, None, 1, LabelWrite(None, None, partition=2)) for c in resolved]
    assert await store.save_many(done) == []
    assert await store.due(2, before_ms=10**9, limit=3) == earliest[4:7]
    after = await store.load_many(resolved, with_labels=True)
    assert [(s.rev, s.state, s.labels) for s in after] == [(2, b"{}", None)] * 4
