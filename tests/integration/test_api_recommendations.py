"""Recommendations through the whole pipeline: events on Kafka, the real state consumer folding
them into Redis (journeys and catalog), the API answering; and its 422s."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from prometheus_client import CollectorRegistry

from consumers.state_worker import run_state_consumer
from service.api.recommendation_schemas import (
    BatchRecommendationsPublic,
    RecommendationsPublic,
)
from service.bus import ensure_parcours_topics
from service.settings import Settings
from tests.integration.api_fixtures import Api, running_api
from tests.support import committed, keyed, produce, wait_until

T0 = datetime.fromisoformat("2026-11-20T10:00:00+00:00")


def _event(customer: str, kind: str, minutes: float, n: int, **props: Any) -> dict[str, Any]:
    return {
        "event_id": f"{customer}-{n}",
        "customer_id": customer,
        "type": kind,
        "channel": "app" if customer == "carter" else "web",
        "timestamp": (T0 + timedelta(minutes=minutes)).isoformat(),
        "properties": props,
    }


def _stream() -> list[dict[str, Any]]:
    """Shoppers who cart phones with cases (and some chargers), a tv everyone looks at, and:
    `carter` leaves a phone in the cart; `buyer` buys a phone; `both` carts phone and case."""
    events: list[dict[str, Any]] = []
    for i in range(5):
        shopper = f"shopper-{i}"
        events += [
            _event(shopper, "add_to_cart", 10 + i, 1, product_id="phone", price=500.0,
                   category="phones"),
            _event(shopper, "add_to_cart", 11 + i, 2, product_id="case", price=20.0,
                   category="accessories"),
        ]  # fmt: skip
        if i < 3:
            events.append(_event(shopper, "add_to_cart", 12 + i, 3, product_id="charger"))
    for i in range(6):
        viewer = f"viewer-{i}"
        events += [
            _event(viewer, "product_view", 20 + i, k, product_id="tv", category="screens")
            for k in range(6)
        ]
    events += [
        _event("carter", "product_view", 0, 1, product_id="phone", category="phones"),
        _event("carter", "add_to_cart", 1, 2, product_id="phone", price=500.0, category="phones"),
        _event("buyer", "add_to_cart", 30, 1, product_id="phone", price=500.0),
        _event("buyer", "purchase", 32, 2, order_id="o-1"),
        _event("both", "add_to_cart", 40, 1, product_id="phone", price=500.0),
        _event("both", "add_to_cart", 41, 2, product_id="case", price=20.0),
        # the last event of the stream: the catalog's clock, 90 minutes after carter's cart
        _event("late", "page_view", 91, 1, url="https://shop.example/"),
    ]
    return events


@dataclass
class Pipeline:
    api: Api
    settings: Settings
    registry: CollectorRegistry

    async def feed(self, events: list[dict[str, Any]]) -> None:
        """Produce to Kafka and wait until the consumer committed all of it."""
        kafka = self.settings.kafka
        bootstrap, topic = kafka.bootstrap or "", kafka.events_topic
        ends = await produce(bootstrap, topic, keyed(events))
        partitions = kafka.partitions

        async def caught_up() -> bool:
            done = await committed(bootstrap, kafka.consumer_group, topic, partitions)
            return all(done[p] >= end for p, end in ends.items())

        await wait_until(caught_up, timeout_s=90)

    async def recommend(self, customer: str, **params: Any) -> dict[str, Any]:
        response = await self.api.client.get(
            f"/v1/customers/{customer}/recommendations", params=params
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        RecommendationsPublic.model_validate(body)  # the documented schema, as a model
        schema = (await self.api.client.get("/v1/schema/recommendations")).json()
        jsonschema.validate(body, schema)  # and as the published JSON Schema
        return body


@pytest.fixture(params=[5.0, 0.0], ids=["cached", "exact"])
async def pipeline(settings: Settings, request: pytest.FixtureRequest) -> AsyncIterator[Pipeline]:
    """The pipeline, answered from the API's catalog cache or scored inside Redis per request."""
    recommend = settings.recommend.model_copy(update={"cache_ttl_s": request.param})
    settings = settings.model_copy(update={"recommend": recommend})
    await ensure_parcours_topics(settings)
    registry = CollectorRegistry()
    stop = asyncio.Event()
    task = asyncio.create_task(run_state_consumer(settings, stop, registry))
    try:
        async with running_api(settings) as api:
            yield Pipeline(api, settings, registry)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def _of_type(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r for r in body["recommendations"] if r["type"] == kind]


def _products(recs: list[dict[str, Any]]) -> list[str]:
    return [item["product_id"] for r in recs for item in r["items"]]


async def test_each_action_appears_exactly_when_the_journey_calls_for_it(
    pipeline: Pipeline,
) -> None:
    await pipeline.feed(_stream())

    carter = await pipeline.recommend("carter", context="cart")
    buyer = await pipeline.recommend("buyer", context="home", limit=20)
    both = await pipeline.recommend("both", context="cart", limit=20)
    stranger = await pipeline.recommend("never-seen", context="home")

    # an idle open cart: a reminder first, with the cart, its value and the last channel
    reminder = carter["recommendations"][0]
    assert reminder["type"] == "abandoned_cart_reminder"
    assert reminder["reason"] in ("cart_at_risk", "cart_idle")
    assert _products([reminder]) == ["phone"]
    assert reminder["cart"]["value"] == 500.0
    assert reminder["cart"]["last_channel"] == "app"
    assert reminder["cart"]["idle_seconds"] == 90 * 60
    # accessories bought with the carted phone, never the phone itself
    accessories = _of_type(carter, "accessory")
    assert _products(accessories)[:2] == ["case", "charger"]
    assert all(r["seed"] == "phone" and r["reason"] == "bought_with_cart_item" for r in accessories)
    assert carter["known"] is True
    assert carter["stage"] == "decision"
    assert _of_type(carter, "next_best_action")[0]["action"]["stage"] == "decision"

    # a purchase closes the cart: no reminder, and the phone just bought is not suggested again
    assert _of_type(buyer, "abandoned_cart_reminder") == []
    assert "phone" not in _products(buyer["recommendations"])
    assert "case" in _products(_of_type(buyer, "accessory"))

    # nothing already in the cart is suggested, by any action but the reminder
    suggested = [r for r in both["recommendations"] if r["type"] != "abandoned_cart_reminder"]
    assert not {"phone", "case"} & set(_products(suggested))

    # an unknown customer: the cold start, not an error
    assert stranger["known"] is False
    assert stranger["stage"] == "awareness"
    kinds = [r["type"] for r in stranger["recommendations"]]
    assert kinds[0] == "next_best_action"
    assert stranger["recommendations"][0]["reason"] == "cold_start"
    assert _products(_of_type(stranger, "trending"))[0] == "tv"
    assert "abandoned_cart_reminder" not in kinds


async def test_viewed_product_seeds_accessories_for_anyone_and_is_never_suggested(
    pipeline: Pipeline,
) -> None:
    await pipeline.feed(_stream())

    body = await pipeline.recommend("never-seen", context="product_page", product_id="case")

    accessories = _of_type(body, "accessory")
    assert body["recommendations"][0]["type"] == "accessory"
    assert _products(accessories) == ["phone", "charger"]  # charger: 3 of the 5 case carts
    assert {r["reason"] for r in accessories} == {"bought_with_viewed_product"}
    assert "case" not in _products(body["recommendations"])


async def test_batch_answers_every_customer_in_order_and_feedback_counts_clicks_by_type(
    pipeline: Pipeline,
) -> None:
    await pipeline.feed(_stream())

    response = await pipeline.api.client.post(
        "/v1/recommendations:batch",
        json={"customer_ids": ["carter", "never-seen", "buyer"], "limit": 3},
        headers={"X-Request-ID": "campaign-42"},
    )
    assert response.status_code == 200, response.text
    body = BatchRecommendationsPublic.model_validate(response.json())
    assert [r.customer_id for r in body.results] == ["carter", "never-seen", "buyer"]
    assert [r.request_id for r in body.results] == [f"campaign-42.{i}" for i in range(3)]
    assert all(len(r.recommendations) <= 3 for r in body.results)
    assert body.results[0].context == "email"
    served = body.results[0].recommendations
    ids = [r.id for r in served]
    assert len(set(ids)) == len(ids)

    clicked = next(r for r in served if r.type == "accessory")
    await pipeline.feed(
        [
            _event("carter", "recommendation_view", 92, 10, recommendation_id=served[0].id),
            _event("carter", "recommendation_click", 93, 11, recommendation_id=clicked.id),
        ]
    )

    def feedback(kind: str, action: str) -> float:
        labels = {"type": action, "kind": kind}
        value = pipeline.registry.get_sample_value("parcours_recommendation_feedback_total", labels)
        return value or 0.0

    assert feedback("click", "accessory") == 1.0
    assert feedback("view", served[0].type) == 1.0
    api_registry = pipeline.api.app.state.context.metrics.registry
    assert (
        api_registry.get_sample_value(
            "parcours_recommendations_served_total", {"type": "accessory", "context": "email"}
        )
        or 0
    ) >= 1


@pytest.mark.parametrize(
    ("path", "params", "loc"),
    [
        ("/v1/customers/c1/recommendations", {"context": "checkout"}, ["query", "context"]),
        ("/v1/customers/c1/recommendations", {"limit": 0}, ["query", "limit"]),
        ("/v1/customers/c1/recommendations", {"limit": 101}, ["query", "limit"]),
        ("/v1/customers/c1/recommendations", {"limit": 51}, ["query", "limit"]),
        ("/v1/customers/c1/recommendations", {"limit": "ten"}, ["query", "limit"]),
        ("/v1/customers/c1/recommendations", {"product_id": "a\x01b"}, ["query", "product_id"]),
        ("/v1/customers/c1/recommendations", {"product_id": ""}, ["query", "product_id"]),
        (f"/v1/customers/{'x' * 129}/recommendations", {}, ["path", "customer_id"]),
    ],
)
async def test_bad_parameters_get_a_422_naming_the_parameter(
    api: Api, path: str, params: dict[str, Any], loc: list[str]
) -> None:
    response = await api.client.get(path, params=params)

    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [loc]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"customer_ids": []}, ["body", "customer_ids"]),
        ({"customer_ids": [f"c{i}" for i in range(101)]}, ["body", "customer_ids"]),
        ({"customer_ids": ["c1"], "context": "sms"}, ["body", "context"]),
        ({"customer_ids": ["c1"], "limit": 51}, ["body", "limit"]),
        ({"customer_ids": ["c1", ""]}, ["body", "customer_ids", 1]),
        ({"customer_ids": ["c1"], "customerIds": ["c2"]}, ["body", "customerIds"]),
    ],
)
async def test_bad_batch_gets_a_422_naming_the_field(
    api: Api, body: dict[str, Any], loc: list[str | int]
) -> None:
    response = await api.client.post("/v1/recommendations:batch", json=body)

    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [loc]


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with running_api(settings) as running:
        yield running
