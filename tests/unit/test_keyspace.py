"""Key layout for Redis Cluster: stable journey tags, and the settings a cluster refuses."""

from __future__ import annotations

import zlib
from collections import Counter

import pytest
from pydantic import ValidationError

from service.keyspace import journey_shard, journey_tag
from service.settings import RecommendSettings, RedisSettings, Settings


def test_journey_shard_is_crc32_of_the_id_so_every_process_agrees() -> None:
    assert journey_shard("customer-42", 16) == zlib.crc32(b"customer-42") % 16
    assert journey_shard("é:漢字", 7) == zlib.crc32("é:漢字".encode()) % 7
    assert journey_tag(3) == "{j3}"


def test_journey_shards_spread_customers_evenly() -> None:
    counts = Counter(journey_shard(f"c{i}", 16) for i in range(16_000))
    assert set(counts) == set(range(16))
    assert max(counts.values()) < 1.15 * min(counts.values())


def test_a_cluster_refuses_uncached_recommendations_at_start() -> None:
    with pytest.raises(ValidationError, match="PARCOURS_RECOMMEND_CACHE_TTL_S=0"):
        Settings(redis=RedisSettings(cluster=True), recommend=RecommendSettings(cache_ttl_s=0))
    assert Settings(redis=RedisSettings(cluster=True)).recommend.cache_ttl_s > 0
    assert Settings(recommend=RecommendSettings(cache_ttl_s=0)).redis.cluster is False
