"""The whole state consumer (group membership, commits, retries) against real Kafka and Redis."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
from prometheus_client import CollectorRegistry

from consumers.state_worker import run_state_consumer
from service.bus import ensure_topics
from service.embedded import EmbeddedRedis
from service.journey import build_fold
from service.settings import Settings
from service.store import connect_redis, journey_store
from tests.conftest import make_settings
from tests.support import (
    committed,
    expected_states,
    journey_stream,
    keyed,
    produce,
    read_records,
    stored_states,
    wait_until,
)


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(persistent=True) as redis:
        yield redis


@pytest.fixture
async def running(
    kafka_bootstrap: str, own_redis: EmbeddedRedis
) -> AsyncIterator[tuple[Settings, CollectorRegistry]]:
    # Quiet partitions follow the clock after half a second: idle work that needs Redis.
    settings = make_settings(kafka_bootstrap, own_redis.url, models={"idle_advance_after_s": 0.5})
    await ensure_topics(
        settings.kafka, [settings.kafka.events_topic, settings.kafka.dead_letter_topic]
    )
    registry = CollectorRegistry()
    stop = asyncio.Event()
    task = asyncio.create_task(run_state_consumer(settings, stop, registry))
    yield settings, registry
    assert not task.done(), "the consumer stopped by itself"
    stop.set()
    await asyncio.wait_for(task, 30)


async def test_consumer_survives_redis_outages_without_losing_or_repeating_events(
    running: tuple[Settings, CollectorRegistry],
    own_redis: EmbeddedRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings, registry = running
    kafka = settings.kafka
    bootstrap, topic, group = kafka.bootstrap or "", kafka.events_topic, kafka.consumer_group
    stream = journey_stream(customers=40, events=900, seed=11)

    async def caught_up(ends: dict[int, int]) -> bool:
        return await committed(bootstrap, group, topic, 4) == {p: ends.get(p, 0) for p in range(4)}

    ends = await produce(bootstrap, topic, keyed(stream[:300]))
    await wait_until(lambda: caught_up(ends), timeout_s=60)

    # Redis dies: nothing may be committed past what is durably applied.
    own_redis.kill()
    before_outage = await committed(bootstrap, group, topic, 4)
    ends = _merge(ends, await produce(bootstrap, topic, keyed(stream[300:600])))
    await asyncio.sleep(2.0)
    assert await committed(bootstrap, group, topic, 4) == before_outage
    own_redis.start()
    await wait_until(lambda: caught_up(ends), timeout_s=60)

    # Redis hangs: every call times out; same guarantee.
    own_redis.pause()
    before_hang = await committed(bootstrap, group, topic, 4)
    ends = _merge(ends, await produce(bootstrap, topic, keyed(stream[600:])))
    await asyncio.sleep(3.0)
    assert await committed(bootstrap, group, topic, 4) == before_hang
    own_redis.resume()
    await wait_until(lambda: caught_up(ends), timeout_s=60)

    records = await read_records(bootstrap, topic, ends)
    fold = build_fold(settings.journey)
    expected = expected_states(fold, records)
    redis = connect_redis(own_redis.url, socket_timeout_s=2, max_connections=2)
    store = journey_store(redis, settings.redis)
    stored = await stored_states(store, list(expected))
    await redis.aclose()
    assert stored == expected
    assert sum(s.events_applied for s in expected.values()) == len(stream)
    retries = registry.get_sample_value(
        "parcours_consumer_retries_total", {"reason": "StoreUnavailable"}
    )
    assert retries is not None
    assert retries >= 2
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and "not applied" in r.getMessage()
    ]
    assert warnings, "an outage must be logged"
    assert f"{topic}[" in warnings[0].getMessage(), "the log names topic, partition and offsets"


def _merge(a: dict[int, int], b: dict[int, int]) -> dict[int, int]:
    return {p: max(a.get(p, 0), b.get(p, 0)) for p in {*a, *b}}


async def test_consumer_idle_while_redis_is_down_keeps_running_and_catches_up(
    running: tuple[Settings, CollectorRegistry], own_redis: EmbeddedRedis
) -> None:
    settings, registry = running
    kafka = settings.kafka
    bootstrap, topic, group = kafka.bootstrap or "", kafka.events_topic, kafka.consumer_group
    stream = journey_stream(customers=10, events=200, seed=5)

    async def caught_up(ends: dict[int, int]) -> bool:
        return await committed(bootstrap, group, topic, 4) == {p: ends.get(p, 0) for p in range(4)}

    ends = await produce(bootstrap, topic, keyed(stream[:100]))
    await wait_until(lambda: caught_up(ends), timeout_s=60)

    own_redis.kill()  # no events come: only the idle sweeps meet the outage
    idle_retries = {"reason": "StoreUnavailable"}
    await wait_until(
        lambda: (
            (registry.get_sample_value("parcours_consumer_retries_total", idle_retries) or 0) >= 1
        ),
        timeout_s=30,
    )
    own_redis.start()
    ends = _merge(ends, await produce(bootstrap, topic, keyed(stream[100:])))
    await wait_until(lambda: caught_up(ends), timeout_s=60)

    redis = connect_redis(own_redis.url, socket_timeout_s=2, max_connections=2)
    stored = await stored_states(journey_store(redis, settings.redis), sorted(
        {e["customer_id"] for e in stream}))  # fmt: skip
    await redis.aclose()
    assert sum(s.events_applied for s in stored.values() if s) == len(stream)
