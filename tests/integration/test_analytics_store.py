"""The analytics in the real Redis: each fact counted once whatever is redelivered, buckets
gone after their retention, bounded touchpoints, and every key in the `{analytics}` slot."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from redis.crc import key_slot

from consumers.analytics_recording import AnalyticsRecording, analytics_recording
from models.analytics import DAY_MS, HOUR_MS, Fact
from service.analytics import AnalyticsStore, CustomerFacts, analytics_store
from service.errors import StoreUnavailable
from service.settings import AnalyticsSettings, Settings
from service.store import JourneyStore, Write, connect_redis, journey_store
from tests.analytics_oracle import KINDS, assert_store_matches, recompute_as_configured
from tests.conftest import make_settings
from tests.integration.conftest import Worker
from tests.support import Record, expected_states, journey_stream, keyed, stored_states

T0 = 1_569_888_000_000  # 2019-10-01T00:00Z


@pytest.fixture
def settings(kafka_bootstrap: str, redis_url: str) -> Settings:
    """Short horizons, so customers exit and carts are abandoned within a small stream."""
    base = make_settings(kafka_bootstrap, redis_url, models={"abandon_after_s": 4.0})
    analytics = AnalyticsSettings(horizon_s=2.0, allowed_lateness_s=0, max_touchpoints=100_000)
    return base.model_copy(update={"analytics": analytics})


async def _records(worker: Worker, events: Sequence[dict[str, Any]]) -> list[Record]:
    return await worker.records(keyed(events))


def _stream() -> list[dict[str, Any]]:
    return journey_stream(customers=12, events=400, seed=5)


async def _snapshot(worker: Worker) -> dict[bytes, Any]:
    """Every analytics key and its contents (sketches by their estimate)."""
    found: dict[bytes, Any] = {}
    pattern = f"{worker.settings.redis.key_prefix}:{{analytics}}:*"
    async for key in worker.redis.scan_iter(match=pattern, count=1000):
        kind = await worker.redis.type(key)
        if kind == b"hash":
            found[key] = await worker.redis.hgetall(key)
        elif kind == b"zset":
            found[key] = await worker.redis.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            found[key] = await worker.redis.smembers(key)
        else:
            found[key] = await worker.redis.pfcount(key)
    return found


def _applied(worker: Worker, records: Sequence[Record]) -> int:
    return sum(s.events_applied for s in expected_states(worker.fold, records).values())


async def test_batch_redelivered_after_crash_before_journey_write_counts_once(
    worker: Worker,
) -> None:
    # The analytics call succeeds, then the process dies before its journeys are written:
    # the redelivered batch folds the same events again, and the fence must refuse them.
    records = await _records(worker, _stream())

    class Crashing(JourneyStore):
        async def save_many(self, writes: Sequence[Write]) -> list[int]:
            raise StoreUnavailable("the process died here")

    crashing = worker.store_as(Crashing)
    with pytest.raises(StoreUnavailable):
        await worker.updater(store=crashing, analytics=worker.analytics()).handle(records)
    counted = worker.sample("parcours_analytics_facts_total")

    await worker.updater(analytics=worker.analytics()).handle(records)

    assert counted == _applied(worker, records)
    assert worker.sample("parcours_analytics_facts_total") == counted
    expected = recompute_as_configured(worker.settings, worker.fold, records)
    store = analytics_store(worker.redis, worker.settings)
    await assert_store_matches(store, worker.fold.map, expected)


async def test_same_batch_twice_changes_nothing_the_second_time(worker: Worker) -> None:
    records = await _records(worker, _stream())
    updater = worker.updater(analytics=worker.analytics())
    await updater.handle(records)
    before = await _snapshot(worker)

    await worker.updater(analytics=worker.analytics()).handle(records)

    assert await _snapshot(worker) == before
    assert any(b"{analytics}:c:" in key for key in before)


async def test_zombie_writer_and_new_owner_count_each_event_once(worker: Worker) -> None:
    # The zombie records the first offsets, then the new owner handles the whole log before
    # the zombie's journey write, which is refused; it refolds and counts nothing again.
    records = await _records(worker, _stream())
    seen_by_zombie = [r for r in records if r.offset < 20]
    owner = worker.updater(analytics=worker.analytics())
    racing = worker.racing_store(lambda: owner.handle(records))

    await worker.updater(store=racing, analytics=worker.analytics()).handle(seen_by_zombie)

    assert worker.sample("parcours_analytics_facts_total") == _applied(worker, records)
    assert worker.sample("parcours_store_write_conflicts_total") > 0, "the writers raced"
    expected = recompute_as_configured(worker.settings, worker.fold, records)
    store = analytics_store(worker.redis, worker.settings)
    await assert_store_matches(store, worker.fold.map, expected)


def _same_partition(count: int, partitions: int) -> list[str]:
    """Customer ids whose keys the producer sends to partition 0."""
    found, i = [], 0
    while len(found) < count:
        key = f"c-{i}".encode()
        if DefaultPartitioner()(key, list(range(partitions)), list(range(partitions))) == 0:
            found.append(key.decode())
        i += 1
    return found


async def test_deadlines_past_one_calls_share_are_resolved_between_polls(
    worker: Worker, settings: Settings
) -> None:
    worker.settings = settings.model_copy(
        update={"analytics": settings.analytics.model_copy(update={"sweep_batch": 1})}
    )
    *quiet, late = _same_partition(11, settings.kafka.partitions)
    at = datetime(2026, 11, 1, 10, tzinfo=UTC)
    events = [
        {"event_id": f"e-{c}", "customer_id": c, "type": "page_view", "channel": "web",
         "timestamp": (at if c != late else at.replace(hour=11)).isoformat()}
        for c in [*quiet, late]
    ]  # fmt: skip
    records = await _records(worker, events)
    analytics = worker.analytics()
    updater = worker.updater(analytics=analytics)
    await updater.handle(records[:-1])
    await updater.handle(records[-1:])  # an hour later: all ten are due, one call takes one
    resolved = worker.sample("parcours_analytics_resolved_total", outcome="exit")

    for _ in range(len(quiet)):
        await updater.idle()

    assert resolved == 1
    assert worker.sample("parcours_analytics_resolved_total", outcome="exit") == len(quiet)
    pending = f"{settings.redis.key_prefix}:{{analytics}}:pending"
    assert await worker.redis.hkeys(pending) == [late.encode()]
    expected = recompute_as_configured(worker.settings, worker.fold, records)
    store = analytics_store(worker.redis, worker.settings)
    await assert_store_matches(store, worker.fold.map, expected)


def _fact(offset: int, at: int, *, partition: int = 0, progress: tuple[str, ...] = ()) -> Fact:
    return Fact(
        partition, offset, at, ("first_channel:web", "visitor:new", "risk:none"),
        ["e|awareness", "m|new|awareness"], ["awareness"], progress, at + HOUR_MS, None,
    )  # fmt: skip


def _store(worker: Worker, **options: int) -> AnalyticsStore:
    settings: dict[str, int] = {
        "hour_retention_ms": 2 * HOUR_MS, "day_retention_ms": 2 * DAY_MS, "lateness_ms": 0,
        "abandon_after_ms": HOUR_MS, **options,
    }  # fmt: skip
    return AnalyticsStore(worker.redis, prefix=worker.settings.redis.key_prefix, **settings)


async def test_record_same_facts_twice_counts_them_once(worker: Worker) -> None:
    store = _store(worker)
    facts = [CustomerFacts("c1", [_fact(0, T0), _fact(1, T0 + 1)])]
    first = await store.record("retail", facts)
    before = await _snapshot(worker)

    again = await store.record("retail", facts)

    assert (first.facts, again.facts) == (2, 0)
    assert await _snapshot(worker) == before
    mixed = [CustomerFacts("c1", [_fact(1, T0 + 1), _fact(2, T0 + 2)])]
    assert (await store.record("retail", mixed)).facts == 1


async def test_buckets_past_retention_are_deleted_and_never_written_again(worker: Worker) -> None:
    store = _store(worker)
    await store.record("retail", [CustomerFacts("c1", [_fact(0, T0)])])
    early = (await store.read("retail", "hour", "all", [T0])).totals
    assert early == {"e|awareness": 1, "m|new|awareness": 1}

    await store.record("retail", [CustomerFacts("c2", [_fact(1, T0 + 3 * HOUR_MS)])])
    late = await store.record("retail", [CustomerFacts("c3", [_fact(0, T0, partition=1)])])

    assert (await store.read("retail", "hour", "all", [T0])).totals == {}
    assert (await store.read("retail", "day", "all", [T0])).totals["e|awareness"] == 3
    assert late.dropped == 1  # its hour bucket, not its day bucket
    prefix = worker.settings.redis.key_prefix
    left = [k async for k in worker.redis.scan_iter(match=f"{prefix}:{{analytics}}:*:h:{T0}*")]
    assert left == []
    index = await worker.redis.zrange(f"{prefix}:{{analytics}}:expiry", 0, -1)
    assert f"retail:h:{T0}".encode() not in index
    assert f"retail:d:{T0}".encode() in index


async def test_touchpoint_targets_past_the_cap_are_pooled_by_type_and_channel(
    worker: Worker,
) -> None:
    store = _store(worker, max_touchpoints=10)
    facts = [_fact(i, T0, progress=(f"product_view|web|sku-{i}",)) for i in range(30)]

    await store.record("retail", [CustomerFacts("c1", facts)])

    touches = (await store.read("retail", "hour", "all", [T0], touches=True)).touches
    assert len(touches) == 11
    assert touches["p|product_view|web|*"] == 20
    assert sum(touches.values()) == 30


async def test_every_analytics_key_shares_the_analytics_hash_slot(worker: Worker) -> None:
    records = await _records(worker, _stream())
    bare = make_settings(worker.settings.kafka.bootstrap or "", worker.settings.redis.url or "")
    plain = journey_store(worker.redis, bare.redis)
    await worker.updater(store=plain).handle(records)  # the same log without analytics

    await worker.updater(analytics=worker.analytics()).handle(records)

    prefix = worker.settings.redis.key_prefix
    ours = [k.decode() async for k in worker.redis.scan_iter(match=f"{prefix}:*", count=1000)]
    theirs = [k.decode() async for k in worker.redis.scan_iter(match=f"{bare.redis.key_prefix}:*")]
    tagged = [k for k in ours if k.startswith(f"{prefix}:{{analytics}}:")]
    assert {k.split(":", 1)[1] for k in ours if k not in tagged} == {
        k.split(":", 1)[1] for k in theirs
    }, "analytics wrote keys outside its hash tag"
    assert {key_slot(k.encode()) for k in tagged} == {key_slot(b"{analytics}")}
    kinds = {k.removeprefix(f"{prefix}:{{analytics}}:").split(":")[0] for k in tagged}
    assert {"c", "t", "u", "keys", "fence", "clock", "pending", "expiry", "exits"} <= kinds


async def test_outcomes_decided_later_count_in_the_bucket_of_their_last_event(
    worker: Worker,
) -> None:
    # A cart left at 10:59 is abandoned, and the customer exits, in the 10:00 bucket, though
    # both are only decided by their return at 12:00, which counts in the 12:00 bucket.
    at = datetime(2026, 11, 1, 10, 59, 59, tzinfo=UTC)
    events = [
        {"event_id": "a1", "customer_id": "c-1", "type": "add_to_cart", "channel": "app",
         "timestamp": at.isoformat(),
         "properties": {"product_id": "sku-1", "price": 12.5, "quantity": 2}},
        {"event_id": "a2", "customer_id": "c-1", "type": "page_view", "channel": "web",
         "timestamp": at.replace(hour=12).isoformat()},
    ]  # fmt: skip
    records = await _records(worker, events)

    await worker.updater(analytics=worker.analytics()).handle(records)

    store = analytics_store(worker.redis, worker.settings)
    ten = int(at.replace(minute=0, second=0).timestamp() * 1000)
    starts = [ten, ten + 2 * HOUR_MS]
    left, back = (await store.read("retail", "hour", "all", starts, series=KINDS)).series
    assert left == {
        "m|new|awareness": 1, "e|awareness": 1, "n|awareness": 1, "c|awareness|app": 1,
        "f|awareness|app": 1, "m|awareness|decision": 1, "e|decision": 1, "n|decision": 1,
        "c|decision|app": 1, "f|decision|app": 1,
        "m|decision|exit": 1, "w|decision|0": 1, "a|earlier": 1, "v|earlier": 2500,
    }  # fmt: skip
    assert back == {"m|exit|decision": 1}
    assert worker.sample("parcours_analytics_resolved_total", outcome="abandoned_cart") == 1


async def test_analytics_unreachable_fails_the_batch_before_any_journey_is_written(
    worker: Worker,
) -> None:
    records = await _records(worker, _stream()[:30])
    dead = connect_redis("redis://127.0.0.1:1/0", socket_timeout_s=0.5, max_connections=2)
    analytics = analytics_recording(worker.settings, dead, worker.metrics, worker.fold.map)

    with pytest.raises(StoreUnavailable) as info:
        await worker.updater(analytics=analytics).handle(records)

    assert info.value.retriable
    customers = list(expected_states(worker.fold, records))
    assert all(s.state is None for s in await worker.store.load_many(customers))
    await dead.aclose()


async def test_failed_analytics_call_stops_later_chunks_and_replays_to_the_oracle(
    worker: Worker,
) -> None:
    # A chunk's analytics call may run while the chunk before writes its journeys. A failed
    # call must still stop every later chunk's calls (their fence would pass over the failed
    # chunk's facts, which would then be lost) and its own chunk's journey write.
    records = await _records(worker, _stream())
    calls: list[int] = []

    class Failing(AnalyticsRecording):
        async def record(self, customers: Iterable[tuple[str, list[Fact]]]) -> None:
            calls.append(1)
            if len(calls) == 2:
                raise StoreUnavailable("Redis went away")
            await super().record(customers)

    counting, saves = worker.saving_store()
    chunk = len(records) // 5
    failing = worker.updater(
        store=counting, analytics=worker.analytics(Failing), chunk_records=chunk
    )
    with pytest.raises(StoreUnavailable):
        await failing.handle(records)
    assert len(calls) == 2, "no analytics call after the failed one"
    assert len(saves) == 1, "only the chunk before the failed call wrote its journeys"

    await worker.updater(analytics=worker.analytics(), chunk_records=chunk).handle(records)
    expected = recompute_as_configured(worker.settings, worker.fold, records)
    await assert_store_matches(
        analytics_store(worker.redis, worker.settings), worker.fold.map, expected
    )
    states = expected_states(worker.fold, records)
    assert await stored_states(worker.store, list(states)) == states
