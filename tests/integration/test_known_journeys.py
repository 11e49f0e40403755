"""The journeys a state consumer wrote, kept decoded, on a real broker and Redis: a later
batch folds onto the kept state of a journey it reads back unchanged, and decodes what it
read for one changed behind the consumer's back (an erasure, another writer)."""

from __future__ import annotations

import asyncio

from models.events import Event
from models.fold import Fold
from models.state import JourneyState
from tests.integration.conftest import Worker
from tests.support import Record, expected_states, journey_stream, keyed, stored_states


def _halves(records: list[Record]) -> tuple[list[Record], list[Record]]:
    """Two batches as polls deliver them: each partition's first and second half of its
    records (the stream repeats its customers, so both hold the same ones)."""
    offsets: dict[int, list[int]] = {}
    for record in records:
        offsets.setdefault(record.partition, []).append(record.offset)
    middle = {p: sorted(found)[len(found) // 2] for p, found in offsets.items()}
    first = [r for r in records if r.offset < middle[r.partition]]
    return first, [r for r in records if r.offset >= middle[r.partition]]


def _customers(records: list[Record]) -> int:
    return len({r.key for r in records})


def _read(worker: Worker, state: str) -> float:
    return worker.sample("parcours_consumer_journeys_read_total", state=state)


async def test_a_later_batch_folds_onto_the_kept_states_without_decoding(worker: Worker) -> None:
    records = await worker.records(keyed(journey_stream(customers=20, events=300, seed=21)))
    first, second = _halves(records)

    updater = worker.updater(chunk_records=16)
    await updater.handle(first)
    await updater.handle(second)

    expected = expected_states(worker.fold, records)
    assert await stored_states(worker.store, list(expected)) == expected
    assert _read(worker, "kept") == _customers(second)
    assert _read(worker, "decoded") == 0


async def test_without_known_journeys_every_journey_read_is_decoded(worker: Worker) -> None:
    records = await worker.records(keyed(journey_stream(customers=20, events=300, seed=21)))
    first, second = _halves(records)

    updater = worker.updater(known_journeys=0)
    await updater.handle(first)
    await updater.handle(second)

    expected = expected_states(worker.fold, records)
    assert await stored_states(worker.store, list(expected)) == expected
    assert (_read(worker, "kept"), _read(worker, "decoded")) == (0, _customers(second))


async def test_only_the_most_recently_written_journeys_are_kept(worker: Worker) -> None:
    records = await worker.records(keyed(journey_stream(customers=12, events=240, seed=22)))
    first, second = _halves(records)

    updater = worker.updater(known_journeys=5)
    await updater.handle(first)
    await updater.handle(second)

    expected = expected_states(worker.fold, records)
    assert await stored_states(worker.store, list(expected)) == expected
    assert (_read(worker, "kept"), _read(worker, "decoded")) == (5, _customers(second) - 5)


async def test_a_journey_erased_behind_the_consumer_is_not_rewritten_from_memory(
    worker: Worker,
) -> None:
    records = await worker.records(keyed(journey_stream(customers=6, events=120, seed=23)))
    first, second = _halves(records)
    updater = worker.updater()
    await updater.handle(first)
    erased = first[0].key.decode()
    stages = list(worker.fold.map.stages)
    assert await worker.store.erase(erased, stages=stages, partitions=4, hold_ms=1_000)

    await updater.handle(second)

    assert await worker.store.erased(erased), "the erasure holds: no journey was recreated"
    later = [r for r in second if r.key.decode() == erased]
    assert worker.sample("parcours_events_suppressed_total", reason="erased") == len(later)
    others = [r for r in records if r.key.decode() != erased]
    expected = expected_states(worker.fold, others)
    assert await stored_states(worker.store, list(expected)) == expected

    # Read from Redis while the erasure holds, their events are dropped again; once the hold
    # ends, they start a new journey: the consumer did not keep the erased marker it read,
    # which would drop their events from memory for good.
    await updater.handle(later)
    assert worker.sample("parcours_events_suppressed_total", reason="erased") == 2 * len(later)
    await asyncio.sleep(1.1)
    await updater.handle(later)
    assert await stored_states(worker.store, [erased]) == expected_states(worker.fold, later)


async def test_a_journey_another_writer_changed_is_decoded_not_folded_from_memory(
    worker: Worker,
) -> None:
    # A zombie keeps the states it wrote; the new owner of the partitions then applies every
    # event. The zombie's next batch reads the owner's journeys, at revisions its own writes
    # would pass, and must fold onto them, not onto what it kept.
    records = await worker.records(keyed(journey_stream(customers=8, events=160, seed=24)))
    first, second = _halves(records)
    zombie = worker.updater()
    await zombie.handle(first)
    await worker.updater().handle(records)

    await zombie.handle(second)

    expected = expected_states(worker.fold, records)
    assert await stored_states(worker.store, list(expected)) == expected
    assert _read(worker, "kept") == 0


async def test_a_journey_that_changed_under_a_batch_is_decoded_by_the_next(
    worker: Worker,
) -> None:
    # Another writer applies the whole stream just before this updater's first write: every
    # write of the first batch loses its race, so what the batch folded is not what Redis
    # holds, and the second batch must decode what it reads.
    records = await worker.records(keyed(journey_stream(customers=8, events=160, seed=25)))
    first, second = _halves(records)
    updater = worker.updater(store=worker.racing_store(lambda: worker.updater().handle(records)))
    await updater.handle(first)

    await updater.handle(second)

    expected = expected_states(worker.fold, records)
    assert await stored_states(worker.store, list(expected)) == expected
    assert worker.sample("parcours_store_write_conflicts_total") > 0, "the writers raced"
    assert _read(worker, "kept") == 0


async def test_a_journey_half_changed_by_a_failed_event_is_not_folded_onto(worker: Worker) -> None:
    # The fold fails on the one event of the second batch after changing the journey in place;
    # nothing is written for it, so the third batch must fold onto what the first one wrote.
    events = journey_stream(customers=1, events=6, seed=26)
    failing = events[3]["event_id"]

    class Broken(Fold):
        def _apply(self, state: JourneyState, event: Event, t: int) -> None:
            super()._apply(state, event, t)
            if event.event_id == failing:
                raise ZeroDivisionError("fold bug")

    records = await worker.records(keyed(events))
    updater = worker.updater(fold=Broken(worker.fold.map, worker.fold.limits))
    for batch in (records[:3], records[3:4], records[4:]):
        await updater.handle(batch)

    healthy = records[:3] + records[4:]
    customer = events[0]["customer_id"]
    assert await stored_states(worker.store, [customer]) == expected_states(worker.fold, healthy)
