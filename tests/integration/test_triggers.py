"""Webhook triggers from the state consumer against a real broker and Redis: which fire, once,
with deterministic ids, published before the journey write, capped per the journey map."""

from __future__ import annotations

from datetime import timedelta

from models.fold import event_digest
from models.triggers import Trigger
from service.learning import live_scorer
from service.metrics import ModelMetrics
from tests.integration.conftest import Worker
from tests.integration.test_labelling import T0, Feed, _event
from tests.support import read_until_quiet


async def _triggers(worker: Worker) -> list[Trigger]:
    settings = worker.settings
    records = await read_until_quiet(
        settings.kafka.bootstrap or "", settings.triggers.topic, settings.kafka.partitions
    )
    return [Trigger.from_json(r.value) for r in records]


def _ms(minutes: float) -> int:
    return int((T0 + timedelta(minutes=minutes)).timestamp() * 1000)


def _scorer(worker: Worker) -> object:
    return live_scorer(
        worker.redis, worker.settings.redis, worker.settings.models, worker.fold.map,
        ModelMetrics(worker.metrics.registry),
    )  # fmt: skip


async def test_stage_changes_and_a_converting_purchase_emit_their_triggers(worker: Worker) -> None:
    feed = Feed(worker)
    updater = worker.labelled_updater(triggering=worker.triggering())
    await feed.send(
        updater,
        _event(1, "ann", "product_view", 0, product_id="p1"),
        _event(2, "ann", "add_to_cart", 1, product_id="p1", price=20.0),
        _event(3, "ann", "purchase", 5, order_id="o-1"),
    )

    triggers = await _triggers(worker)
    moves = [
        (t.payload["from"], t.payload["to"]) for t in triggers if t.type == "journey.stage_changed"
    ]
    assert moves == [("consideration", "decision"), ("decision", "purchase")]
    [converted] = [t for t in triggers if t.type == "customer.converted"]
    assert converted.payload["order_id"] == "o-1"
    assert converted.payload["cart"]["value"] == 20.0
    assert converted.id == f"customer.converted:ann:{event_digest('ann-3')}"
    assert converted.at == _ms(5)
    assert worker.sample("parcours_triggers_emitted_total", type="journey.stage_changed") == 2


async def test_abandoned_cart_is_triggered_by_the_sweep_once_and_capped_for_a_day(
    worker: Worker,
) -> None:
    feed = Feed(worker)
    updater = worker.labelled_updater(triggering=worker.triggering())
    await feed.send(updater, _event(1, "bea", "add_to_cart", 0, product_id="p1", price=9.5))
    # another customer's events move the watermark past bea's deadline (1 h + lateness)
    batch = await feed.send(updater, _event(1, "cy", "page_view", 63))
    await updater.handle(batch)  # redelivered: the sweep must not emit it again
    # bea comes back, carts again, and abandons again within 24 h: capped
    await feed.send(updater, _event(2, "bea", "add_to_cart", 70, product_id="p2", price=1.0))
    await feed.send(updater, _event(2, "cy", "page_view", 70 + 63))

    abandoned = [t for t in await _triggers(worker) if t.type == "cart.abandoned"]
    assert [(t.customer_id, t.at) for t in abandoned] == [("bea", _ms(60))]
    assert abandoned[0].id == f"cart.abandoned:bea:{_ms(60)}"
    assert [i["product_id"] for i in abandoned[0].payload["cart"]["items"]] == ["p1"]
    assert worker.sample("parcours_triggers_capped_total", type="cart.abandoned") == 1
    state = await worker.store.get("bea")
    assert state is not None
    assert state.alerts["cart.abandoned"] == _ms(60)


async def test_cart_at_risk_fires_once_per_cart(worker: Worker) -> None:
    feed = Feed(worker)
    updater = worker.labelled_updater(
        scorer=_scorer(worker),  # type: ignore[arg-type]
        triggering=worker.triggering(at_risk_threshold=0.0),  # every scored cart is "at risk"
    )
    await feed.send(updater, _event(1, "dan", "add_to_cart", 0, product_id="p1", price=5.0))
    await feed.send(updater, _event(2, "dan", "add_to_cart", 1, product_id="p2", price=5.0))
    await feed.send(updater, _event(3, "dan", "product_view", 2, product_id="p3"))

    at_risk = [t for t in await _triggers(worker) if t.type == "cart.at_risk"]
    assert len(at_risk) == 1
    assert at_risk[0].payload["cart"]["value"] == 5.0
    assert at_risk[0].payload["threshold"] == 0.0


async def test_triggers_of_a_batch_that_was_not_written_come_again_with_the_same_ids(
    worker: Worker,
) -> None:
    feed = Feed(worker)
    updater = worker.labelled_updater(triggering=worker.triggering())
    batch = await feed.send(
        updater,
        _event(1, "eve", "product_view", 0, product_id="p1"),
        _event(2, "eve", "add_to_cart", 1, product_id="p1", price=3.0),
    )
    first = {t.id for t in await _triggers(worker)}
    # the journey write is lost (as if the process died just before it): replay the batch
    await worker.redis.delete(worker.store.key("eve"), worker.store.labels_key("eve"))
    await worker.labelled_updater(triggering=worker.triggering()).handle(batch)

    again = [t.id for t in await _triggers(worker)]
    assert set(again) == first
    assert len(again) == 2 * len(first)  # at least once: receivers dedupe by id
