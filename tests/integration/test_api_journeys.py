"""GET /v1/customers/{id}/journey: the state the real updater wrote, in its public form."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from models.events import Event
from models.state import JourneyState, encode_state
from service.settings import Settings
from service.store import Write
from tests.integration.api_fixtures import (
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
    event,
    running_api,
    topic_records,
)
from tests.integration.conftest import Worker
from tests.support import expected_states

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$")


def _ms(text: str) -> int:
    """An RFC 3339 UTC time from the API as epoch milliseconds."""
    assert _RFC3339_UTC.match(text), f"not RFC 3339 in UTC: {text!r}"
    return (datetime.fromisoformat(text) - _EPOCH) // timedelta(milliseconds=1)


def _keys(value: Any) -> set[str]:
    """Every object key anywhere in a JSON document."""
    if isinstance(value, dict):
        return set(value).union(*(_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_keys(v) for v in value))
    return set()


def _journey_events(customer: str) -> list[dict[str, Any]]:
    def at(i: int, **fields: Any) -> dict[str, Any]:
        # Offsets other than UTC, and milliseconds, must come back as the same instant in UTC.
        timestamp = f"2026-11-20T12:{i:02d}:00.{i * 37:03d}+02:00"
        return event(i, customer_id=customer, timestamp=timestamp, **fields)

    return [
        at(0, type="page_view"),
        at(1, type="product_view",
           properties={"product_id": "sku-1", "category": "shoes", "price": 40.0}),
        at(2, type="add_to_cart", properties={"product_id": "sku-1", "price": 40.0, "quantity": 2}),
        at(3, type="add_to_cart", properties={"product_id": "sku-2", "price": 15.5, "quantity": 1}),
        at(4, type="checkout_started"),
        at(5, type="purchase",
           properties={"product_id": "sku-2", "price": 15.5, "quantity": 1, "order_id": "o-1"}),
        at(6, type="add_to_cart", channel="app",
           properties={"product_id": "sku-3", "price": 9.99, "quantity": 1}),
    ]  # fmt: skip


async def test_get_journey_unknown_customer_404_names_the_customer(api: Api) -> None:
    response = await api.client.get("/v1/customers/c-nobody/journey")

    assert response.status_code == 404, response.text
    assert "c-nobody" in response.json()["detail"]


async def test_get_journey_after_state_updater_matches_the_state(api: Api, worker: Worker) -> None:
    customer = "c-journey"
    sent = _journey_events(customer)
    posted = await api.client.post("/v1/events", json=sent)
    assert posted.status_code == 202, posted.text
    records = await topic_records(api.settings)
    assert len(records) == len(sent)

    await worker.updater().handle(records)
    response = await api.client.get(f"/v1/customers/{customer}/journey")

    state: JourneyState = expected_states(worker.fold, records)[customer]
    assert (await worker.store.get(customer)) == state
    assert state.cart.units == 3  # the scenario is what it means to be
    assert state.purchases.count == 1
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["customer_id"] == customer
    assert body["journey_map"] == state.journey_map
    assert body["stage"] == state.stage
    assert body["events_applied"] == state.events_applied == len(sent)
    assert body["cart"]["open"] is True
    assert body["cart"]["units"] == state.cart.units
    assert body["cart"]["value"] == state.cart.value == 89.99
    assert [i["product_id"] for i in body["cart"]["items"]] == list(state.cart.items)
    assert body["purchases"]["count"] == state.purchases.count
    assert body["purchases"]["total_spend"] == state.purchases.total_spend
    assert len(body["touchpoints"]) == len(state.touchpoints)
    assert [t["type"] for t in body["touchpoints"]] == [t.type for t in state.touchpoints]
    assert [_ms(t["at"]) for t in body["touchpoints"]] == [t.at for t in state.touchpoints]
    assert _ms(body["stage_entered_at"]) == state.stage_entered_at
    assert _ms(body["first_event_at"]) == state.first_event_at
    assert _ms(body["last_event_at"]) == state.last_event_at
    assert _ms(body["cart"]["opened_at"]) == state.cart.opened_at
    assert _ms(body["purchases"]["last_at"]) == state.purchases.last_at
    assert [_ms(v["entered_at"]) for v in body["stage_history"]] == [
        v.entered_at for v in state.stage_history
    ]
    first = datetime.fromisoformat(sent[0]["timestamp"]).astimezone(UTC)
    assert body["first_event_at"].startswith(first.strftime("%Y-%m-%dT%H:%M:%S"))
    # Bookkeeping stays internal, though the stored state does carry it.
    assert state.seen
    assert state.offsets
    assert not {"seen", "offsets", "order_keys", "v"} & _keys(body)


async def test_get_journey_customer_id_with_slash_served_like_any_other(
    api: Api, worker: Worker
) -> None:
    # The event contract accepts any printable customer_id, "/" included; its journey must be
    # reachable with the id percent-encoded in the path.
    customer = "tenant/42"
    posted = await api.client.post("/v1/events", json=event(1, customer_id=customer))
    assert posted.status_code == 202, posted.text
    state = worker.fold.fold(None, [(Event.model_validate(event(1, customer_id=customer)), None)])
    assert state is not None
    assert await worker.store.save_many([Write(customer, encode_state(state), 0)]) == []

    response = await api.client.get(f"/v1/customers/{quote(customer, safe='')}/journey")

    assert response.status_code == 200, response.text
    assert response.json()["customer_id"] == customer


async def test_get_journey_customer_id_over_128_chars_422(api: Api) -> None:
    longest = await api.client.get(f"/v1/customers/{'c' * 128}/journey")
    too_long = await api.client.get(f"/v1/customers/{'c' * 129}/journey")

    assert longest.status_code == 404, longest.text
    assert too_long.status_code == 422, too_long.text
    assert too_long.json()["detail"][0]["loc"] == ["path", "customer_id"]


async def test_get_journey_redis_down_503_with_retry_after(settings: Settings) -> None:
    redis = settings.redis.model_copy(update={"url": "redis://127.0.0.1:1/0"})
    async with running_api(settings.model_copy(update={"redis": redis})) as api:
        journey = await api.client.get("/v1/customers/c-1/journey")
        ready = await api.client.get("/readyz")

    assert journey.status_code == 503, journey.text
    assert int(journey.headers["retry-after"]) > 0
    assert isinstance(journey.json()["detail"], str)
    assert ready.status_code == 503, ready.text
    assert ready.json()["checks"]["redis"] != "ok"
    assert ready.json()["checks"]["kafka"] == "ok"
    assert ready.json()["status"] == "not_ready"
