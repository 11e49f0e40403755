"""The state updater against a real broker and Redis: exactly-once effect, dead letters."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence

import orjson
import pytest

from consumers.runner import Backoff, BatchRunner
from models.events import Event, EventDecoder
from models.fold import Fold, Position
from models.state import JourneyState
from service.bus import make_consumer
from service.errors import StoreUnavailable
from service.learning import live_scorer
from service.metrics import ModelMetrics
from service.store import JourneyStore
from tests.integration.conftest import Worker
from tests.support import (
    committed,
    expected_states,
    journey_stream,
    keyed,
    produce,
    read_records,
    read_until_quiet,
    stored_states,
    wait_until,
)


async def _stored(worker: Worker, customers: Sequence[str]) -> dict[str, JourneyState | None]:
    return await stored_states(worker.store, customers)


async def test_handle_batch_state_equals_pure_fold(worker: Worker) -> None:
    records = await worker.records(keyed(journey_stream(customers=25, events=400)))

    await worker.updater().handle(records)

    expected = expected_states(worker.fold, records)
    assert await _stored(worker, list(expected)) == expected
    assert worker.sample("parcours_events_consumed_total") == 400
    assert sum(s.events_applied for s in expected.values()) == 400


@pytest.mark.parametrize("chunk_records", [1, 7, 64])
async def test_batch_folded_in_chunks_has_the_effect_of_one_fold(
    worker: Worker, chunk_records: int
) -> None:
    # Chunks are written while the next is folded; a customer spans many of them, each
    # continuing from what the one before wrote.
    records = await worker.records(keyed(journey_stream(customers=25, events=400)))

    await worker.updater(chunk_records=chunk_records).handle(records)

    expected = expected_states(worker.fold, records)
    assert await _stored(worker, list(expected)) == expected
    assert worker.sample("parcours_events_applied_total", type="product_view") == sum(
        s.counts_by_type.get("product_view", 0) for s in expected.values()
    )
    for (left, entered), count in _stage_moves(worker.fold, records).items():
        sample = worker.sample(
            "parcours_journey_stage_transitions_total", from_stage=left, to_stage=entered
        )
        assert sample == count, (left, entered)


async def test_failed_chunk_write_stops_the_chunks_after_it_and_replays_to_one_fold(
    worker: Worker,
) -> None:
    records = await worker.records(keyed(journey_stream(customers=12, events=200, seed=5)))
    failing, saves = worker.saving_store(fail_at=2)

    with pytest.raises(StoreUnavailable):
        await worker.updater(store=failing, chunk_records=20).handle(records)
    assert len(saves) == 2, "no chunk after the failed one is written"
    await worker.updater(chunk_records=20).handle(records)  # the runner's rewind: redelivery

    expected = expected_states(worker.fold, records)
    assert await _stored(worker, list(expected)) == expected


async def test_handle_same_batch_twice_applies_each_event_once(worker: Worker) -> None:
    # A crash after the Redis write and before the offset commit redelivers the batch.
    records = await worker.records(keyed(journey_stream(customers=10, events=150)))
    updater = worker.updater()

    await updater.handle(records)
    await updater.handle(records)

    expected = expected_states(worker.fold, records)
    assert await _stored(worker, list(expected)) == expected
    assert worker.sample("parcours_events_deduplicated_total", reason="redelivered") == 150
    moves = _stage_moves(worker.fold, records)
    assert sum(moves.values()) > len(expected), "the stream moves customers on, not just in"
    for (left, entered), count in moves.items():  # counted once, not again on redelivery
        sample = worker.sample(
            "parcours_journey_stage_transitions_total", from_stage=left, to_stage=entered
        )
        assert sample == count, (left, entered)


def _stage_moves(fold: Fold, records: Sequence) -> Counter[tuple[str, str]]:
    """Stage changes of the pure fold, event by event: what the transition metric counts."""
    decoder = EventDecoder(fold.map.event_types)
    states: dict[str, JourneyState] = {}
    moves: Counter[tuple[str, str]] = Counter()
    for record in records:
        event = decoder.decode(record.value, int(time.time() * 1000))
        before = states.get(event.customer_id)
        after = fold.apply(before, event, Position(record.partition, record.offset))
        if before is None or after.stage != before.stage:
            moves[(before.stage if before else "new", after.stage)] += 1
        states[event.customer_id] = after
    return moves


async def test_handle_repeated_event_id_at_new_offset_is_skipped(worker: Worker) -> None:
    # A client retrying a POST produces the same event again, at a later offset.
    events = journey_stream(customers=1, events=5)
    records = await worker.records(keyed([*events, events[1], events[3]]))

    await worker.updater().handle(records)

    state = (await _stored(worker, [events[0]["customer_id"]]))[events[0]["customer_id"]]
    assert state is not None
    assert state.events_applied == 5
    assert worker.sample("parcours_events_deduplicated_total", reason="duplicate_event_id") == 2


async def test_handle_bad_records_dead_lettered_with_reason_and_original_bytes(
    worker: Worker,
) -> None:
    good = journey_stream(customers=3, events=6)
    future = {**good[0], "event_id": "future", "timestamp": "2999-01-01T00:00:00Z"}
    bad: list[tuple[bytes | None, bytes | None, str]] = [
        (b"k1", b"{not json", "invalid_json"),
        (b"k2", b"\xff\xfe\x00binary", "invalid_json"),
        (b"k3", orjson.dumps({**good[0], "event_id": "m1", "customer_id": None}), "invalid_event"),
        (
            b"k4",
            orjson.dumps({**good[0], "event_id": "m2", "type": "teleport"}),
            "unknown_event_type",
        ),
        (b"k5", orjson.dumps(future), "timestamp_in_future"),
        (b"k6", None, "empty"),
    ]
    records = await worker.records([*keyed(good), *((k, v) for k, v, _ in bad)])

    await worker.updater().handle(records)

    letters = await read_until_quiet(
        worker.settings.kafka.bootstrap or "", worker.settings.kafka.dead_letter_topic, 4
    )
    by_key = {r.key: r for r in letters}
    for key, value, reason in bad:
        letter = by_key[key]
        headers = dict(letter.headers)
        source = next(r for r in records if r.key == key)
        assert letter.value == value
        assert headers["parcours.dlq.reason"] == reason.encode()
        assert headers["parcours.dlq.topic"] == worker.settings.kafka.events_topic.encode()
        assert int(headers["parcours.dlq.partition"]) == source.partition
        assert int(headers["parcours.dlq.offset"]) == source.offset
        assert orjson.loads(headers["parcours.dlq.errors"])[0]["msg"]
    assert len(letters) == len(bad)
    expected = expected_states(worker.fold, records)
    assert await _stored(worker, list(expected)) == expected
    assert worker.sample("parcours_events_dead_lettered_total", reason="invalid_json") == 2


async def test_handle_event_the_fold_cannot_apply_is_dead_lettered_and_rest_applied(
    worker: Worker,
) -> None:
    class Broken(Fold):
        """Fails on one event after having changed the state: a half-applied event."""

        def _apply(self, state: JourneyState, event: Event, t: int) -> None:
            super()._apply(state, event, t)
            if event.event_id == "e-7-3":
                raise ZeroDivisionError("fold bug")

    events = journey_stream(customers=1, events=6)
    records = await worker.records(keyed(events))
    broken = Broken(worker.fold.map, worker.fold.limits)

    await worker.updater(fold=broken).handle(records)

    customer = events[0]["customer_id"]
    healthy = [r for r in records if orjson.loads(r.value)["event_id"] != "e-7-3"]
    assert (await _stored(worker, [customer]))[customer] == expected_states(worker.fold, healthy)[
        customer
    ]
    letters = await read_until_quiet(
        worker.settings.kafka.bootstrap or "", worker.settings.kafka.dead_letter_topic, 4
    )
    assert [dict(r.headers)["parcours.dlq.reason"] for r in letters] == [b"apply_failed"]
    assert b"ZeroDivisionError: fold bug" in dict(letters[0].headers)["parcours.dlq.errors"]


@pytest.mark.parametrize("chunk_records", [500, 3])
async def test_handle_writer_that_lost_the_race_refolds_onto_newer_state(
    worker: Worker, chunk_records: int
) -> None:
    # A zombie after a rebalance: it loads journeys, the new owner writes them, then the zombie
    # writes. The compare-and-set refuses the stale writes; the zombie reloads and refolds.
    # The owner has also applied later events the zombie never saw: a stale overwrite would
    # lose them. In small chunks, the owner's one write gives a journey exactly the revision
    # the zombie's next chunk expects: that chunk must not be written either.
    records = await worker.records(keyed(journey_stream(customers=8, events=180)))
    seen_by_zombie = [r for r in records if r.offset < 20]
    racing = worker.racing_store(lambda: worker.updater().handle(records))

    await worker.updater(store=racing, chunk_records=chunk_records).handle(seen_by_zombie)

    expected = expected_states(worker.fold, records)
    assert await _stored(worker, list(expected)) == expected
    zombie_customers = {orjson.loads(r.value)["customer_id"] for r in seen_by_zombie}
    assert worker.sample("parcours_store_write_conflicts_total") == len(zombie_customers)


async def test_handle_with_redis_down_raises_store_unavailable(worker: Worker) -> None:
    records = await worker.records(keyed(journey_stream(customers=2, events=4)))
    from service.store import connect_redis

    dead = connect_redis("redis://127.0.0.1:1/0", socket_timeout_s=0.5, max_connections=2)
    store = JourneyStore(dead, prefix="x", ttl_ms=86_400_000, shards=1)

    with pytest.raises(StoreUnavailable) as info:
        await worker.updater(store=store).handle(records)

    assert info.value.retriable
    await dead.aclose()


async def test_lags_from_event_time_and_to_refreshed_scores_are_observed_per_partition(
    worker: Worker,
) -> None:
    first = await worker.records(keyed(journey_stream(customers=6, events=60, seed=3)))
    await worker.updater().handle(first)  # no models: no scores to wait for
    partitions = len({r.partition for r in first})
    assert worker.sample("parcours_event_time_to_state_seconds_count") == partitions
    # The stream's events happened on 2026-11-01, long before they were written.
    age = worker.sample("parcours_event_time_to_state_seconds_sum") / partitions
    assert age > 86_400
    assert worker.sample("parcours_event_score_lag_seconds_count") == 0

    scorer = live_scorer(
        worker.redis, worker.settings.redis, worker.settings.models, worker.fold.map,
        ModelMetrics(worker.metrics.registry),
    )  # fmt: skip
    later = await worker.records(keyed(journey_stream(customers=6, events=60, seed=4)))
    await worker.labelled_updater(scorer=scorer).handle(later)
    scored = worker.sample("parcours_event_score_lag_seconds_count")
    assert scored == len({r.partition for r in later})
    assert worker.sample("parcours_event_score_lag_seconds_sum") < 600  # just produced


def _in_batches(records: list, count: int) -> list[list]:
    """`count` batches as polls deliver them: each takes the next slice of every partition's
    records, so consecutive batches hold the same customers."""
    by_partition: dict[int, list] = {}
    for record in records:
        by_partition.setdefault(record.partition, []).append(record)
    batches: list[list] = [[] for _ in range(count)]
    for part in by_partition.values():
        size = -(-len(part) // count)
        for i in range(count):
            batches[i] += part[i * size : (i + 1) * size]
    return batches


@pytest.mark.parametrize("chunk_records", [500, 7])
async def test_batches_begun_before_the_last_is_durable_equal_the_pure_fold(
    worker: Worker, chunk_records: int
) -> None:
    # Each batch is taken on before the one before it is written: it starts from the
    # journeys that batch wrote (not reloaded), and its writes wait for that batch's.
    records = await worker.records(keyed(journey_stream(customers=15, events=600, seed=8)))
    loading, loads = worker.loading_store()
    updater = worker.updater(store=loading, chunk_records=chunk_records)
    dones = [await updater.begin(batch) for batch in _in_batches(records, 6)]
    await asyncio.gather(*dones)

    expected = expected_states(worker.fold, records)
    assert await _stored(worker, list(expected)) == expected
    assert sum(map(len, loads)) == len(expected), "a journey the batch before wrote is not reloaded"


async def test_a_failed_batch_fails_the_batch_begun_after_it_and_both_replay_to_one_fold(
    worker: Worker,
) -> None:
    records = await worker.records(keyed(journey_stream(customers=12, events=300, seed=9)))
    first, second = _in_batches(records, 2)
    failing, saves = worker.saving_store(fail_at=2)
    updater = worker.updater(store=failing, chunk_records=40)
    done_first = await updater.begin(first)
    done_second = await updater.begin(second)
    with pytest.raises(StoreUnavailable):
        await done_first
    with pytest.raises(StoreUnavailable):
        await done_second
    assert len(saves) == 2, "nothing is written after the failed write, in either batch"

    updater.reset()  # the runner's rewind: both batches are delivered again
    await asyncio.gather(*[await updater.begin(batch) for batch in (first, second)])
    expected = expected_states(worker.fold, records)
    assert await _stored(worker, list(expected)) == expected


async def test_journeys_that_changed_under_a_batch_are_reloaded_by_the_batch_after_it(
    worker: Worker,
) -> None:
    # The zombie race across batches: the new owner writes every journey before the zombie's
    # first write. The zombie's second batch, begun meanwhile from its own view of the first
    # batch's journeys, must not write that view (its revisions may even match the owner's):
    # it reloads those journeys and refolds its events onto the owner's.
    records = await worker.records(keyed(journey_stream(customers=8, events=240, seed=10)))
    seen_by_zombie = [r for r in records if r.offset < 25]
    first, second = _in_batches(seen_by_zombie, 2)
    racing = worker.racing_store(lambda: worker.updater().handle(records))
    zombie = worker.updater(store=racing, chunk_records=3)
    await asyncio.gather(*[await zombie.begin(batch) for batch in (first, second)])

    expected = expected_states(worker.fold, records)
    assert await _stored(worker, list(expected)) == expected
    assert worker.sample("parcours_store_write_conflicts_total") > 0, "the writers raced"


async def test_runner_rewinds_both_batches_in_play_when_the_older_fails(worker: Worker) -> None:
    # Small batches, so a batch is taken on while the one before is written; about 50 records
    # per partition against batches of 60, so consecutive batches hold different partitions.
    # The store fails once, mid-stream. The runner must rewind the failed batch and the one
    # begun after it (its writes waited for the failed ones), the older last, retry, commit
    # everything, and apply each event exactly once.
    kafka = worker.settings.kafka
    bootstrap, topic = kafka.bootstrap or "", kafka.events_topic
    ends = await produce(bootstrap, topic, keyed(journey_stream(customers=30, events=200, seed=12)))
    failing, saves = worker.saving_store(fail_at=6)
    updater = worker.updater(store=failing, chunk_records=20)
    consumer = make_consumer(kafka.model_copy(update={"max_batch": 60}), topic, group_id="rw")
    runner = BatchRunner(consumer, updater, worker.metrics, max_batch=60,
                         backoff=Backoff(0.01, 0.05))  # fmt: skip
    consumer.subscribe([topic], listener=runner.listener())
    await consumer.start()
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        partitions = kafka.partitions
        await wait_until(
            lambda: _committed_all(bootstrap, "rw", topic, partitions, ends), timeout_s=60
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await consumer.stop()

    records = await read_records(bootstrap, topic, ends)
    expected = expected_states(worker.fold, records)
    assert await _stored(worker, list(expected)) == expected
    assert len(saves) > 6, "the store failed once and the batches were retried"
    retried = worker.sample("parcours_consumer_retries_total", reason="StoreUnavailable")
    assert retried == 1


async def _committed_all(
    bootstrap: str, group: str, topic: str, partitions: int, ends: dict[int, int]
) -> bool:
    done = await committed(bootstrap, group, topic, partitions)
    return done == {p: ends.get(p, 0) for p in range(partitions)}
