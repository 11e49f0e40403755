"""Labels on event time against a real broker and Redis: recorded, resolved once, swept."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from models.labels import Sample, decode_book, decode_samples
from tests.integration.conftest import Worker
from tests.support import produce, read_records, read_until_quiet

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _event(n: int, customer: str, kind: str, minutes: float, **props: Any) -> dict[str, Any]:
    return {
        "event_id": f"{customer}-{n}",
        "customer_id": customer,
        "type": kind,
        "channel": "web",
        "timestamp": (T0 + timedelta(minutes=minutes)).isoformat(),
        "properties": props,
    }


class Feed:
    """Produces events on one partition and hands each new batch to an updater."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.done = 0
        self.records: list[Any] = []

    async def send(self, updater: Any, *events: dict[str, Any]) -> list[Any]:
        kafka = self.worker.settings.kafka
        messages = [(b"one-partition", orjson.dumps(e)) for e in events]
        ends = await produce(kafka.bootstrap or "", kafka.events_topic, messages)
        records = await read_records(kafka.bootstrap or "", kafka.events_topic, ends)
        batch = records[self.done :]
        self.done = len(records)
        self.records += batch
        await updater.handle(batch)
        return batch


async def _samples(worker: Worker) -> list[Sample]:
    models = worker.settings.models
    records = await read_until_quiet(
        worker.settings.kafka.bootstrap or "", models.samples_topic, models.samples_partitions
    )
    return [s for r in records for s in decode_samples(r.value)]


def _by_kind(samples: list[Sample], kind: str) -> list[Sample]:
    return [s for s in samples if s.kind == kind]


async def test_cart_without_purchase_is_abandoned_once_the_watermark_passes_its_deadline(
    worker: Worker,
) -> None:
    feed, updater = Feed(worker), worker.labelled_updater()
    await feed.send(
        updater,
        _event(1, "alice", "product_view", 0, product_id="p1"),
        _event(2, "alice", "add_to_cart", 1, product_id="p1", price=20.0),
        _event(3, "alice", "product_view", 2, product_id="p2"),
    )
    assert _by_kind(await _samples(worker), "abandonment") == []

    # Another customer's event on the same partition moves the watermark past
    # alice's deadline (last cart activity + 1 h, plus the allowed lateness).
    await feed.send(updater, _event(1, "bob", "page_view", 1 + 60 + 2))

    abandoned = _by_kind(await _samples(worker), "abandonment")
    assert sorted(s.id for s in abandoned) == sorted(
        "a:alice:" + d for d in _digests("alice", 2, 3)
    )
    assert {s.label for s in abandoned} == {True}
    deadline = int((T0 + timedelta(minutes=61)).timestamp() * 1000)
    assert {s.resolved_at for s in abandoned} == {deadline}
    assert (
        worker.sample("parcours_labels_resolved_total", model="abandonment", outcome="abandoned")
        == 2
    )


async def test_purchase_before_the_deadline_converts_the_cart(worker: Worker) -> None:
    feed, updater = Feed(worker), worker.labelled_updater()
    await feed.send(
        updater,
        _event(1, "carol", "add_to_cart", 0, product_id="p1", price=20.0),
        _event(2, "carol", "purchase", 30, product_id="p1", price=20.0, order_id="o1"),
    )

    abandonment = _by_kind(await _samples(worker), "abandonment")
    assert [(s.label, s.at) for s in abandonment] == [(False, _ms(0))]
    next_stage = {s.id: s.label for s in _by_kind(await _samples(worker), "next_stage")}
    assert next_stage == {"n:carol:" + _digests("carol", 1)[0]: "purchase"}


async def test_restart_between_cart_opening_and_deadline_resolves_the_label_exactly_once(
    worker: Worker,
) -> None:
    feed = Feed(worker)
    await feed.send(worker.labelled_updater(), _event(1, "dave", "add_to_cart", 0, product_id="p1"))
    # The process dies here: nothing survives but Redis and Kafka. A new one takes over.
    restarted = worker.labelled_updater()
    await feed.send(restarted, _event(1, "erin", "page_view", 30))
    assert _by_kind(await _samples(worker), "abandonment") == []

    late = await feed.send(restarted, _event(2, "erin", "page_view", 62))
    await restarted.handle(late)  # redelivered after a crash before the commit
    await feed.send(worker.labelled_updater(), _event(3, "erin", "page_view", 200))

    abandoned = _by_kind(await _samples(worker), "abandonment")
    assert [(s.customer_id, s.label) for s in abandoned] == [("dave", True)]
    book = await worker.store.load_many(["dave"], with_labels=True)
    assert decode_book(book[0].labels).abandonment == []


@pytest.mark.parametrize("chunk_records", [500, 4])
async def test_every_sample_id_is_published_once_across_redeliveries(
    worker: Worker, chunk_records: int
) -> None:
    feed, updater = Feed(worker), worker.labelled_updater(chunk_records=chunk_records)
    events = [
        _event(i, f"c{i % 5}", kind, i * 7, product_id=f"p{i % 3}", price=5.0)
        for i, kind in enumerate(
            ["product_view", "add_to_cart", "product_view", "purchase", "review_read"] * 8
        )
    ]
    batch = await feed.send(updater, *events)
    await updater.handle(batch)
    await feed.send(updater, _event(99, "z", "page_view", 60 * 30))

    samples = await _samples(worker)
    counts = Counter(s.id for s in samples)
    assert samples
    assert max(counts.values()) == 1
    assert len(_by_kind(samples, "next_stage")) == len(events)


async def test_scores_are_attached_to_the_journey_with_the_fallback_while_cold(
    worker: Worker,
) -> None:
    from service.learning import live_scorer
    from service.metrics import ModelMetrics

    models = worker.settings.models
    scorer = live_scorer(
        worker.redis, worker.settings.redis, models, worker.fold.map,
        ModelMetrics(worker.metrics.registry),
    )  # fmt: skip
    feed = Feed(worker)
    await feed.send(
        worker.labelled_updater(scorer=scorer),
        _event(1, "fay", "add_to_cart", 0, product_id="p1", price=10.0),
    )

    state = await worker.store.get("fay")
    assert state is not None
    assert state.predictions is not None
    assert state.predictions["abandonment"]["model_version"] == "fallback"
    assert 0.0 <= state.predictions["abandonment"]["risk"] <= 1.0
    odds = state.predictions["next_stage"]["probabilities"]
    assert set(odds) == {*worker.fold.map.stages, "exit"}
    assert abs(sum(odds.values()) - 1.0) < 1e-4


def _ms(minutes: float) -> int:
    return int((T0 + timedelta(minutes=minutes)).timestamp() * 1000)


def _digests(customer: str, *numbers: int) -> list[str]:
    from models.fold import event_digest

    return [event_digest(f"{customer}-{n}") for n in numbers]


async def test_quiet_partition_watermark_follows_the_clock_after_the_idle_delay(
    worker: Worker,
) -> None:
    now = [1000.0]
    updater = worker.labelled_updater(idle_advance_after_s=300, clock=lambda: now[0])
    await Feed(worker).send(updater, _event(1, "gus", "add_to_cart", 0, product_id="p1", price=5.0))

    now[0] += 299  # idle, but not for long enough: event time stands still
    await updater.idle()
    assert _by_kind(await _samples(worker), "abandonment") == []

    now[0] += 60 * 60 + 60 + 2  # an hour and the lateness later, the cart is overdue
    await updater.idle()
    abandoned = _by_kind(await _samples(worker), "abandonment")
    assert [(s.customer_id, s.label, s.resolved_at) for s in abandoned] == [("gus", True, _ms(60))]


async def test_restarted_consumer_times_idle_partitions_from_their_stored_watermark(
    worker: Worker,
) -> None:
    from aiokafka import TopicPartition

    await Feed(worker).send(
        worker.labelled_updater(), _event(1, "hal", "add_to_cart", 0, product_id="p1")
    )
    now = [50.0]
    restarted = worker.labelled_updater(idle_advance_after_s=300, clock=lambda: now[0])
    topic = worker.settings.kafka.events_topic
    await restarted.on_assigned(None, {TopicPartition(topic, 0)})  # type: ignore[arg-type]

    now[0] += 2 * 3600
    await restarted.idle()

    assert [s.customer_id for s in _by_kind(await _samples(worker), "abandonment")] == ["hal"]


async def test_label_book_of_an_expired_journey_is_dropped_by_the_sweep(worker: Worker) -> None:
    feed, updater = Feed(worker), worker.labelled_updater()
    await feed.send(updater, _event(1, "ida", "add_to_cart", 0, product_id="p1"))
    await worker.redis.delete(worker.store.key("ida"))  # the journey's TTL ran out

    await feed.send(updater, _event(1, "jon", "page_view", 2 * 60))

    assert _by_kind(await _samples(worker), "abandonment") == []
    assert await worker.redis.exists(worker.store.labels_key("ida")) == 0
    assert await worker.redis.zscore(worker.store.due_key("ida", 0), "ida") is None
    assert await worker.redis.exists(worker.store.key("ida")) == 0  # not recreated
    assert worker.sample("parcours_labels_dropped_total") == 2  # its next-stage and cart labels


async def test_sweep_keeps_the_journey_and_moves_its_revision_on(worker: Worker) -> None:
    feed, updater = Feed(worker), worker.labelled_updater()
    await feed.send(updater, _event(1, "kim", "add_to_cart", 0, product_id="p1"))
    before = (await worker.store.load_many(["kim"]))[0]

    await feed.send(updater, _event(1, "lou", "page_view", 2 * 60))

    after = (await worker.store.load_many(["kim"], with_labels=True))[0]
    assert after.state == before.state
    assert after.rev == before.rev + 1  # a zombie holding the old revision cannot write back
    book = decode_book(after.labels)
    assert book.abandonment == []
    assert [p.at for p in book.next_stage] == [_ms(0)]  # its 24 h horizon is still ahead
