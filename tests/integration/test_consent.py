"""Consent: a customer who opts out of personalization gets no triggers, no scores, no
training samples from their journey and no personal recommendations, and the API says so;
opting back in restores it. Same events as a consenting customer, side by side."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.settings import Settings
from tests.integration.api_fixtures import Api, running_api
from tests.integration.conftest import Worker
from tests.integration.test_labelling import Feed, _event, _samples
from tests.integration.test_triggers import _scorer, _triggers


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with running_api(settings) as running:
        yield running


def _shopping(customer: str, start: float) -> list[dict[str, object]]:
    return [
        _event(1, customer, "product_view", start, product_id="p1"),
        _event(2, customer, "add_to_cart", start + 1, product_id="p1", price=80.0),
        _event(3, customer, "checkout_started", start + 2),
    ]


async def test_an_opted_out_customer_is_not_scored_triggered_or_learned_from(
    api: Api, worker: Worker
) -> None:
    feed = Feed(worker)
    updater = worker.labelled_updater(scorer=_scorer(worker), triggering=worker.triggering())  # type: ignore[arg-type]
    opt_out = _event(0, "olga", "consent_updated", 0, personalization=False)
    await feed.send(updater, opt_out, *_shopping("olga", 1), *_shopping("paul", 1))
    # someone else's events move the watermark past both carts' abandonment deadlines
    await feed.send(updater, _event(9, "zed", "page_view", 70))

    olga, paul = await worker.store.get("olga"), await worker.store.get("paul")
    triggers = await _triggers(worker)
    samples = await _samples(worker)
    scored = await api.client.get("/v1/customers/olga/predictions")
    shown = await api.client.get("/v1/customers/olga/recommendations?context=cart")
    shown_paul = await api.client.get("/v1/customers/paul/recommendations?context=cart")
    journey = await api.client.get("/v1/customers/olga/journey")

    assert olga is not None
    assert paul is not None
    assert not olga.personalization
    assert olga.cart.items  # the journey itself is still kept
    assert olga.predictions is None
    assert olga.score_history == []
    assert paul.predictions is not None
    assert paul.score_history
    assert not [t for t in triggers if t.customer_id == "olga"]
    assert [t.type for t in triggers if t.customer_id == "paul" and t.type == "cart.abandoned"]
    assert not [s for s in samples if s.customer_id == "olga"]
    assert [s for s in samples if s.customer_id == "paul"]
    assert scored.status_code == 200
    assert scored.json() | {"as_of": None} == {
        "customer_id": "olga", "as_of": None, "stage": olga.stage, "personalized": False,
        "abandonment": None, "next_stage": None,
    }  # fmt: skip
    assert shown.json()["known"] is True
    assert shown.json()["personalized"] is False
    assert "abandoned_cart_reminder" not in {r["type"] for r in shown.json()["recommendations"]}
    assert shown_paul.json()["personalized"] is True
    assert journey.json()["personalization"] is False
    assert journey.json()["consent_at"] is not None


async def test_opting_back_in_scores_and_triggers_again(worker: Worker) -> None:
    feed = Feed(worker)
    updater = worker.labelled_updater(scorer=_scorer(worker), triggering=worker.triggering())  # type: ignore[arg-type]
    await feed.send(updater, _event(0, "olga", "consent_updated", 0, personalization=False))
    await feed.send(updater, _event(5, "olga", "consent_updated", 1, personalization=True))
    await feed.send(updater, *_shopping("olga", 2))
    await feed.send(updater, _event(9, "zed", "page_view", 70))

    olga = await worker.store.get("olga")
    triggers = [t.type for t in await _triggers(worker) if t.customer_id == "olga"]

    assert olga is not None
    assert olga.personalization
    assert olga.predictions is not None
    assert "cart.abandoned" in triggers
