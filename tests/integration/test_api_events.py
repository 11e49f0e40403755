"""POST /v1/events against a real broker: what is acknowledged, refused, and never produced."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from models.events import Event
from service.embedded import EmbeddedKafka, free_port
from service.settings import Settings
from tests.conftest import make_settings
from tests.integration.api_fixtures import (
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
    assert_nothing_produced,
    event,
    running_api,
    topic_records,
)
from tests.support import journey_stream


def _assert_validation_problem(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The documented 422 shape: `{"detail": [{"loc", "msg", "type"}], "reason"}`."""
    assert set(body) == {"detail", "reason"}, body
    assert isinstance(body["reason"], str)
    assert body["reason"]
    errors = body["detail"]
    assert isinstance(errors, list)
    assert errors
    for error in errors:
        assert set(error) == {"loc", "msg", "type"}, error
        assert isinstance(error["loc"], list)
        assert isinstance(error["msg"], str)
        assert error["msg"]
        assert isinstance(error["type"], str)
        assert error["type"]
    return list(errors)


async def test_post_events_single_event_produces_one_keyed_canonical_record(api: Api) -> None:
    sent = event(7, customer_id="c-single", timestamp="2026-11-20T12:15:00.250+02:00")

    response = await api.client.post("/v1/events", json=sent)

    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": ["evt-7"], "count": 1}
    records = await topic_records(api.settings)
    assert len(records) == 1
    record = records[0]
    expected = Event.model_validate(sent)
    assert record.key == b"c-single"
    assert record.value == expected.to_json()
    assert Event.model_validate_json(record.value) == expected
    assert orjson.loads(record.value)["timestamp"] == "2026-11-20T12:15:00.250000+02:00"


async def test_post_events_batch_of_1000_accepted_in_order_and_keyed_by_customer(
    api: Api,
) -> None:
    stream = journey_stream(customers=20, events=1000, seed=11)

    response = await api.client.post("/v1/events", json=stream)

    assert response.status_code == 202, response.text[:500]
    ids = [e["event_id"] for e in stream]
    assert response.json() == {"accepted": ids, "count": 1000}
    records = await topic_records(api.settings)
    assert len(records) == 1000
    produced = [orjson.loads(r.value) for r in records]
    assert all(r.key == p["customer_id"].encode() for r, p in zip(records, produced, strict=True))
    assert sorted(p["event_id"] for p in produced) == sorted(ids)
    # Keyed by customer: each customer's events sit on one partition, in the order sent.
    by_customer: dict[str, set[int]] = {}
    for r, p in zip(records, produced, strict=True):
        by_customer.setdefault(p["customer_id"], set()).add(r.partition)
    assert all(len(partitions) == 1 for partitions in by_customer.values()), by_customer
    for customer in by_customer:
        in_log = [p["event_id"] for p in produced if p["customer_id"] == customer]
        assert in_log == [e["event_id"] for e in stream if e["customer_id"] == customer]


async def test_post_events_batch_of_1001_rejected_and_nothing_produced(api: Api) -> None:
    stream = journey_stream(customers=5, events=1001, seed=12)

    response = await api.client.post("/v1/events", json=stream)

    assert response.status_code == 422, response.text[:500]
    errors = _assert_validation_problem(response.json())
    assert [e["loc"] for e in errors] == [["body"]]
    assert errors[0]["type"] == "too_long"
    await assert_nothing_produced(api.settings)


def _without(body: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != field}


_INVALID = [
    pytest.param(
        orjson.dumps(_without(event(), "customer_id")),
        ["body", "customer_id"], "invalid_event", "missing",
        id="missing_customer_id",
    ),
    pytest.param(
        orjson.dumps([event(0), event(1), event(2, type="teleport"), event(3)]),
        ["body", 2, "type"], "unknown_event_type", "unknown_event_type",
        id="batch_unknown_type_in_element_2",
    ),
    pytest.param(
        orjson.dumps([event(0), _without(event(1), "customer_id"), event(2)]),
        ["body", 1, "customer_id"], "invalid_event", "missing",
        id="batch_missing_customer_id_in_element_1",
    ),
    pytest.param(
        orjson.dumps(event(type="add_to_cart", properties={"price": 3.5, "quantity": 1})),
        ["body", "properties", "product_id"], "invalid_event", "missing",
        id="add_to_cart_without_product_id",
    ),
    pytest.param(
        orjson.dumps(event(timestamp="2026-11-20T10:15:00")),
        ["body", "timestamp"], "invalid_event", "timezone_aware",
        id="naive_timestamp",
    ),
    pytest.param(
        orjson.dumps(event(timestamp="2999-01-01T00:00:00Z")),
        ["body", "timestamp"], "timestamp_in_future", "in_future",
        id="timestamp_days_in_future",
    ),
    pytest.param(
        b'{"event_id": "evt-0", "customer_id": "c-1",',
        ["body"], "invalid_json", "json_invalid",
        id="invalid_json",
    ),
    pytest.param(
        orjson.dumps(event(coupon="BLACKFRIDAY")),
        ["body", "coupon"], "invalid_event", "extra_forbidden",
        id="extra_top_level_field",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("content", "loc", "reason", "kind"), _INVALID)
async def test_post_events_invalid_body_422_with_exact_loc_and_nothing_produced(
    api: Api, content: bytes, loc: list[str | int], reason: str, kind: str
) -> None:
    response = await api.client.post(
        "/v1/events", content=content, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422, response.text
    body = response.json()
    errors = _assert_validation_problem(body)
    assert [e["loc"] for e in errors] == [loc]
    assert errors[0]["type"] == kind
    assert body["reason"] == reason
    await assert_nothing_produced(api.settings)


@pytest.fixture
async def small_body_api(settings: Settings) -> AsyncIterator[Api]:
    api_settings = settings.api.model_copy(update={"max_body_bytes": 2048})
    async with running_api(settings.model_copy(update={"api": api_settings})) as running:
        yield running


async def test_post_events_body_over_max_body_bytes_413_and_nothing_produced(
    small_body_api: Api,
) -> None:
    api = small_body_api
    big = orjson.dumps([event(i, customer_id="c-big") for i in range(20)])
    assert len(big) > 2048

    declared = await api.client.post(
        "/v1/events", content=big, headers={"content-type": "application/json"}
    )

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 512):
            yield big[start : start + 512]

    streamed = await api.client.post(
        "/v1/events", content=chunks(), headers={"content-type": "application/json"}
    )

    assert declared.status_code == 413, declared.text
    assert "2048" in declared.json()["detail"]
    assert "content-length" not in streamed.request.headers
    assert streamed.status_code == 413, streamed.text
    assert "2048" in streamed.json()["detail"]
    await assert_nothing_produced(api.settings)
    small = await api.client.post("/v1/events", json=event(1, customer_id="c-small"))
    assert small.status_code == 202, small.text


async def test_post_events_text_plain_content_type_415_and_nothing_produced(api: Api) -> None:
    response = await api.client.post(
        "/v1/events", content=orjson.dumps(event()), headers={"content-type": "text/plain"}
    )

    assert response.status_code == 415, response.text
    assert "text/plain" in response.json()["detail"]
    await assert_nothing_produced(api.settings)


async def test_post_events_json_media_type_in_any_case_accepted(api: Api) -> None:
    # RFC 9110 section 8.3.1: media type and subtype are case-insensitive.
    with_charset = await api.client.post(
        "/v1/events",
        content=orjson.dumps(event(1)),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    upper_case = await api.client.post(
        "/v1/events", content=orjson.dumps(event(2)), headers={"content-type": "Application/JSON"}
    )

    assert with_charset.status_code == 202, with_charset.text
    assert upper_case.status_code == 202, upper_case.text


async def test_post_events_broker_down_503_with_retry_after_and_failed_ids(
    redis_url: str,
) -> None:
    with EmbeddedKafka() as kafka:
        settings = make_settings(
            kafka.bootstrap, redis_url, produce_timeout_s=2.0, request_timeout_ms=2000
        )
        async with running_api(settings) as api:
            up = await api.client.post("/v1/events", json=event(1))
            assert up.status_code == 202, up.text

            kafka.kill()  # SIGKILL: Tansu takes seconds to shut down on SIGTERM
            down = await api.client.post("/v1/events", json=[event(2), event(3, customer_id="c-2")])
            ready = await api.client.get("/readyz")

    assert down.status_code == 503, down.text
    assert int(down.headers["retry-after"]) > 0
    body = down.json()
    assert body["failed"] == ["evt-2", "evt-3"]
    assert body["accepted"] == []
    assert isinstance(body["detail"], str)
    assert ready.status_code == 503, ready.text
    checks = ready.json()["checks"]
    assert ready.json()["status"] == "not_ready"
    assert checks["redis"] == "ok"
    assert checks["kafka"] != "ok"


async def test_post_events_broker_never_reached_503_with_retry_after_and_failed_ids(
    redis_url: str,
) -> None:
    # Nothing listens on the port: the app starts (after its 5 s connect wait) without Kafka.
    settings = make_settings(
        f"127.0.0.1:{free_port()}", redis_url, produce_timeout_s=1.0, request_timeout_ms=1000
    )
    async with running_api(settings) as api:
        down = await api.client.post("/v1/events", json=[event(1), event(2, customer_id="c-2")])
        ready = await api.client.get("/readyz")
        metrics = (await api.client.get("/metrics")).text

    assert down.status_code == 503, down.text
    assert int(down.headers["retry-after"]) > 0
    assert ready.status_code == 503, ready.text
    assert ready.json()["checks"]["redis"] == "ok"
    assert ready.json()["checks"]["kafka"] != "ok"
    assert 'parcours_api_dependency_up{dependency="kafka"} 0.0' in metrics
    assert 'parcours_api_dependency_up{dependency="redis"} 1.0' in metrics
    # The documented 503 body (EventsUnavailable) tells the client what to resend.
    body = down.json()
    assert (body.get("accepted"), body.get("failed")) == ([], ["evt-1", "evt-2"]), body
