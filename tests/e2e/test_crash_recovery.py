"""SIGKILL a consumer mid-stream while a second member joins: nothing lost, nothing twice
(journeys, the catalog and the journey analytics)."""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from service.analytics import analytics_store
from service.bus import ensure_topics
from service.catalog import CatalogRead, catalog_store
from service.journey import build_fold
from service.settings import Settings
from service.store import connect_redis, journey_store
from tests.analytics_oracle import assert_store_matches, recompute_as_configured
from tests.conftest import make_settings
from tests.e2e.conftest import Role
from tests.support import (
    caught_up,
    committed_total,
    expected_catalog,
    expected_states,
    journey_stream,
    produce,
    read_records,
    read_until_quiet,
    settings_env,
    stored_states,
    wait_until,
    with_client_faults,
    with_exposures,
)

pytestmark = pytest.mark.slow

EVENTS = 50_000
CUSTOMERS = 3_000
PARTITIONS = 6
POISON = 40


async def _catalog_counts(
    redis: Redis, settings: Settings
) -> tuple[int, dict[str, float], dict[str, float]]:
    """The stored catalog's clock, decayed basket count per product, and overall trending."""
    store = catalog_store(redis, settings.redis.key_prefix, settings.recommend)
    base = f"{settings.redis.key_prefix}:{{catalog}}:"
    clock = int(await redis.get(base + "clock") or 0)
    scaled: dict[bytes, bytes] = await redis.hgetall(base + "n")  # type: ignore[assignment]
    refs: dict[bytes, bytes] = await redis.hgetall(base + "ref")  # type: ignore[assignment]
    half_life = settings.recommend.cooccurrence_half_life_days * 86_400_000
    counts = {
        item.decode(): float(n) * 2 ** (-max(clock - int(refs[item]), 0) / half_life)
        for item, n in scaled.items()
    }
    [view] = await store.read([CatalogRead(journey_key=base + "no-journey", trending=100)])
    return clock, counts, dict(view.trending)


async def test_sigkill_mid_stream_with_joining_member_applies_every_event_exactly_once(
    kafka_bootstrap: str, redis_url: str, roles: list[Role], tmp_path: Path
) -> None:
    settings = make_settings(kafka_bootstrap, redis_url, partitions=PARTITIONS)
    every_touchpoint = settings.analytics.model_copy(update={"max_touchpoints": 100_000})
    settings = settings.model_copy(update={"analytics": every_touchpoint})  # none pooled
    kafka = settings.kafka
    await ensure_topics(kafka, [kafka.events_topic, kafka.dead_letter_topic])
    env = settings_env(settings) | {"PARCOURS_ANALYTICS_MAX_TOUCHPOINTS": "100000"}
    events = journey_stream(customers=CUSTOMERS, events=EVENTS, seed=5)
    # experiment exposures among them: assignments and outcomes must be exactly once too
    messages = with_client_faults(with_exposures(events, seed=5), seed=5, poison=POISON)
    watched = (kafka_bootstrap, kafka.consumer_group, kafka.events_topic)
    ends: dict[int, int] = {}

    killed = asyncio.Event()

    async def produce_paced() -> None:
        """Paced, and the last fifth only after the kill: it lands mid-stream however slow the
        machine is to start and join the consumers."""
        for start in range(0, len(messages), 1000):
            if start >= len(messages) * 4 // 5:
                await killed.wait()
            sent = await produce(
                kafka_bootstrap, kafka.events_topic, messages[start : start + 1000]
            )
            for partition, end in sent.items():
                ends[partition] = max(ends.get(partition, 0), end)
            await asyncio.sleep(0.3)

    def start(name: str) -> Role:
        role = Role(["consume"], env, tmp_path / f"{name}.log")
        roles.append(role)
        return role

    progress = functools.partial(committed_total, *watched, PARTITIONS)
    first = start("first")
    producing = asyncio.create_task(produce_paced())
    await wait_until(progress, timeout_s=60)
    second = start("second")
    await asyncio.to_thread(second.wait_for_output, "partitions assigned: " + kafka.events_topic)
    await asyncio.sleep(1.0)

    assert not producing.done(), "the kill must land mid-stream"
    done_before_kill = await progress()
    first.kill()
    killed.set()
    restarted = start("restarted")
    await producing
    assert 0 < done_before_kill < sum(ends.values())

    await wait_until(lambda: caught_up(*watched, ends, PARTITIONS), timeout_s=180, interval_s=0.5)
    assert second.terminate() == 0
    assert restarted.terminate() == 0

    records = await read_records(kafka_bootstrap, kafka.events_topic, ends)
    assert len(records) == len(messages)
    expected = expected_states(build_fold(settings.journey), records, outcomes=True)
    redis = connect_redis(redis_url, socket_timeout_s=5, max_connections=4)
    store = journey_store(redis, settings.redis)
    customers = sorted(expected)
    stored = await stored_states(store, customers)
    catalog = await _catalog_counts(redis, settings)
    # every applied event counted once into the analytics, whatever the kill redelivered
    fold = build_fold(settings.journey)
    analytics = recompute_as_configured(settings, fold, records)
    counted = analytics_store(redis, settings)
    await assert_store_matches(counted, fold.map, analytics, scored=True)
    await redis.aclose()
    mismatched = [c for c in customers if stored[c] != expected[c]]
    assert not mismatched, (
        f"{len(mismatched)} journeys differ from the pure fold, e.g. {mismatched[:5]}"
    )
    assert sum(s.events_applied for s in stored.values() if s) == len(events)
    outcomes = Counter(a.status for s in stored.values() if s for a in s.experiments.values())
    assert outcomes["converted"] > 0
    assert outcomes["open"] > 0

    # the catalog learned every applied event once: basket counts and trending as the pure model
    reference = expected_catalog(build_fold(settings.journey), records, settings.recommend)
    clock, counts, trending = catalog
    assert clock == reference.clock
    assert counts == pytest.approx(
        {item: reference.cooccurrence.count(item, clock) for item in counts}, rel=1e-9
    )
    assert len(counts) == 60  # every product of the stream was carted at some point
    assert trending == pytest.approx(dict(reference.trending.top(clock, 100)), rel=1e-9)

    letters = await read_until_quiet(kafka_bootstrap, kafka.dead_letter_topic, PARTITIONS)
    positions = {
        (
            int(dict(r.headers)["parcours.dlq.partition"]),
            int(dict(r.headers)["parcours.dlq.offset"]),
        )
        for r in letters
    }
    poison_positions = {(r.partition, r.offset) for r in records if r.key == b"bad"}
    assert positions == poison_positions
    assert len(poison_positions) == POISON
    assert all(orjson.loads(dict(r.headers)["parcours.dlq.errors"]) for r in letters)
