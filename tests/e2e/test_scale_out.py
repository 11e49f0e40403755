"""Scale-out of one consumer group: a member SIGKILLed and another added mid-stream on an
8-partition topic lose nothing and apply nothing twice."""

from __future__ import annotations

import asyncio
import functools
import signal
from collections import Counter
from pathlib import Path

import pytest

from service.bus import ensure_parcours_topics
from service.journey import build_fold
from service.store import connect_redis, journey_store
from tests.conftest import make_settings
from tests.e2e.conftest import Role
from tests.support import (
    caught_up,
    committed_total,
    expected_states,
    journey_stream,
    produce,
    read_records,
    settings_env,
    stored_states,
    wait_until,
    with_client_faults,
)

pytestmark = pytest.mark.slow

EVENTS = 30_000
CUSTOMERS = 2_000
PARTITIONS = 8


async def test_member_killed_and_member_added_mid_stream_fold_every_event_once(
    kafka_bootstrap: str, redis_url: str, roles: list[Role], tmp_path: Path
) -> None:
    settings = make_settings(kafka_bootstrap, redis_url, partitions=PARTITIONS)
    kafka = settings.kafka
    await ensure_parcours_topics(settings)  # so the two members do not race to create them
    events = journey_stream(customers=CUSTOMERS, events=EVENTS, seed=11)
    messages = with_client_faults(events, seed=11)
    watched = (kafka_bootstrap, kafka.consumer_group, kafka.events_topic)
    holds_partitions = "partitions assigned: " + kafka.events_topic

    def start(name: str) -> Role:
        role = Role(["consume"], settings_env(settings), tmp_path / f"{name}.log")
        roles.append(role)
        return role

    async def holding_partitions(role: Role) -> None:
        await asyncio.to_thread(role.wait_for_output, holds_partitions, 120)

    # A backlog the two members share out, so the kill almost surely finds the victim
    # mid-batch (the checks hold either way); the rest of the stream is produced only once the
    # added member holds partitions, so it has work whatever the timing.
    backlog = len(messages) * 3 // 5
    ends = await produce(kafka_bootstrap, kafka.events_topic, messages[:backlog])
    victim, survivor = start("victim"), start("survivor")
    await holding_partitions(victim)
    await holding_partitions(survivor)
    await wait_until(functools.partial(committed_total, *watched, PARTITIONS), timeout_s=120)
    victim.kill()
    added = start("added")
    await holding_partitions(added)
    ends |= await produce(kafka_bootstrap, kafka.events_topic, messages[backlog:])
    await wait_until(lambda: caught_up(*watched, ends, PARTITIONS), timeout_s=240, interval_s=0.5)
    assert victim.process.returncode == -signal.SIGKILL
    assert survivor.terminate() == 0
    assert added.terminate() == 0

    records = await read_records(kafka_bootstrap, kafka.events_topic, ends)
    assert len(records) == len(messages)
    expected = expected_states(build_fold(settings.journey), records)
    redis = connect_redis(redis_url, socket_timeout_s=5, max_connections=4)
    store = journey_store(redis, settings.redis)
    stored = await stored_states(store, sorted(expected))
    await redis.aclose()
    mismatched = [c for c in sorted(expected) if stored[c] != expected[c]]
    assert not mismatched, (
        f"{len(mismatched)} journeys differ from the pure fold, e.g. {mismatched[:5]}"
    )
    # counted from the generated events, not the log: every event once, client retries included
    applied = {c: s.events_applied for c, s in stored.items() if s is not None}
    assert applied == Counter(e["customer_id"] for e in events)
