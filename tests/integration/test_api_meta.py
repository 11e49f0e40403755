"""Probes, the published contracts (event JSON Schema, OpenAPI) and Prometheus metrics."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from prometheus_client.parser import text_string_to_metric_families

from models.events import event_json_schema
from models.gauges import JourneyGauge
from models.journeymap import load_journey_map
from service.logs import JsonFormatter, RequestIdFilter, request_id
from service.settings import Settings
from service.store import Write
from tests.integration.api_fixtures import (
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
    event,
    running_api,
)
from tests.support import journey_stream

SCHEMA_FILE = Path(__file__).parents[2] / "models" / "event.schema.json"


@pytest.fixture
async def b2b_api(settings: Settings) -> AsyncIterator[Api]:
    """The API running the b2b map, which adds its own event types to the canonical ones."""
    journey = settings.journey.model_copy(update={"map": "b2b"})
    async with running_api(settings.model_copy(update={"journey": journey})) as running:
        yield running


async def test_get_event_schema_active_map_valid_draft_2020_12_that_accepts_real_events(
    b2b_api: Api,
) -> None:
    response = await b2b_api.client.get("/v1/schema/event")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0] == "application/schema+json"
    schema = response.json()
    b2b_types = load_journey_map("b2b").event_types
    assert schema == event_json_schema(b2b_types)
    assert "demo_request" in schema["properties"]["type"]["enum"]
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for sample in [*journey_stream(customers=2, events=20), event(type="demo_request")]:
        validator.validate(sample)
    assert not validator.is_valid(event(type="teleport"))
    assert not validator.is_valid(event(channel="moon"))
    assert not validator.is_valid({k: v for k, v in event().items() if k != "customer_id"})


def test_event_schema_file_equals_generated_canonical_schema() -> None:
    on_disk = json.loads(SCHEMA_FILE.read_text("utf-8"))

    assert on_disk == event_json_schema(), (
        "models/event.schema.json is out of date with the Event model; regenerate it with "
        "`parcours schema > models/event.schema.json`"
    )


async def test_get_healthz_ok(api: Api) -> None:
    response = await api.client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_get_readyz_redis_and_kafka_up_ready_and_gauges_up(api: Api) -> None:
    response = await api.client.get("/readyz")
    metrics = (await api.client.get("/metrics")).text

    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "checks": {"redis": "ok", "kafka": "ok"}}
    # The readiness alert watches these; they move only when something probes /readyz.
    assert _sample(metrics, "parcours_api_dependency_up", dependency="redis") == 1
    assert _sample(metrics, "parcours_api_dependency_up", dependency="kafka") == 1


async def test_get_metrics_reports_the_journey_gauges_from_redis(api: Api) -> None:
    store = api.app.state.context.store
    writes = [
        Write("ann", b"{}", 0, gauge=JourneyGauge("decision", None, 30_00, 12_00)),
        Write("bob", b"{}", 0, gauge=JourneyGauge("decision", None, 0, 0)),
        Write("cyd", b"{}", 0, gauge=JourneyGauge("awareness", None, 0, 0)),
    ]
    assert await store.save_many(writes) == []

    metrics = (await api.client.get("/metrics")).text

    assert _sample(metrics, "parcours_journey_customers", stage="decision") == 2
    assert _sample(metrics, "parcours_journey_customers", stage="awareness") == 1
    assert _sample(metrics, "parcours_journey_customers", stage="loyalty") == 0
    assert _sample(metrics, "parcours_journey_open_carts") == 1
    assert _sample(metrics, "parcours_journey_open_cart_value") == 30.0
    assert _sample(metrics, "parcours_journey_cart_value_at_risk") == 12.0


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"not a local reference: {ref}"
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), f"{ref} does not resolve"
        assert part in node, f"{ref} does not resolve"
        node = node[part]
    return node


async def test_get_openapi_documents_event_body_and_every_ref_resolves(api: Api) -> None:
    response = await api.client.get("/openapi.json")

    assert response.status_code == 200, response.text
    document = response.json()
    components = document["components"]["schemas"]
    assert {"Event", "EventProperties"} <= set(components)
    assert {"event_id", "customer_id", "type", "timestamp"} <= set(components["Event"]["required"])
    body = document["paths"]["/v1/events"]["post"]["requestBody"]
    assert "#/components/schemas/Event" in _refs(body)
    refs = _refs(document)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert isinstance(_resolve(document, ref), dict)
    assert "$defs" not in json.dumps(document)


async def test_get_docs_serves_swagger_ui_html(api: Api) -> None:
    response = await api.client.get("/docs")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text
    assert "swagger" in response.text.lower()


def _sample(metrics_text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


async def test_get_metrics_after_accepted_and_invalid_posts_counts_both(api: Api) -> None:
    accepted = await api.client.post("/v1/events", json=[event(1), event(2)])
    invalid = await api.client.post("/v1/events", json=event(type="teleport"))

    response = await api.client.get("/metrics")

    assert (accepted.status_code, invalid.status_code) == (202, 422)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    requests = "parcours_http_requests_total"
    post = {"method": "POST", "route": "/v1/events"}
    # Each app has its own registry, so the counts are exact.
    assert _sample(text, requests, **post, status="202") == 1, text
    assert _sample(text, requests, **post, status="422") == 1, text
    assert _sample(text, "parcours_api_events_total", outcome="accepted") == 2
    assert _sample(text, "parcours_api_events_total", outcome="invalid") == 1
    assert _sample(text, "parcours_http_request_duration_seconds_count", **post) == 2


async def test_every_response_carries_a_request_id_and_a_sane_caller_id_is_kept(api: Api) -> None:
    fresh = await api.client.get("/healthz")
    again = await api.client.get("/healthz")
    kept = await api.client.get("/healthz", headers={"X-Request-ID": "shop-7.a_b"})
    refused = await api.client.get("/healthz", headers={"X-Request-ID": "bad id\twith space"})

    assert len(fresh.headers["x-request-id"]) == 16
    assert fresh.headers["x-request-id"] != again.headers["x-request-id"]
    assert kept.headers["x-request-id"] == "shop-7.a_b"
    assert refused.headers["x-request-id"] not in ("bad id\twith space", "")


def test_log_lines_carry_the_request_id_of_the_request_being_served() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    token = request_id.set("r-1")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id.reset(token)
    outside = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    RequestIdFilter().filter(outside)

    assert json.loads(JsonFormatter().format(record))["request_id"] == "r-1"
    assert "request_id" not in json.loads(JsonFormatter().format(outside))
