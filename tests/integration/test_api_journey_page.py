"""GET /v1/analytics/live (the journey gauges as JSON) and the journey map page's files."""

from __future__ import annotations

from models.gauges import JourneyGauge
from service.api.context import ApiContext
from service.store import Write
from tests.integration.api_fixtures import (
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
)


def _context(api: Api) -> ApiContext:
    context = api.app.state.context
    assert isinstance(context, ApiContext)
    return context


async def test_live_returns_the_journey_gauges_per_stage_in_the_maps_order(api: Api) -> None:
    context = _context(api)
    stages = context.journey_map.stages
    writes = [
        Write("ann", b"{}", 0, gauge=JourneyGauge(stages[1], None, 12_50, 6_25)),
        Write("bob", b"{}", 0, gauge=JourneyGauge(stages[1], None, 0, 0)),
        Write("cid", b"{}", 0, gauge=JourneyGauge(stages[3], None, 40_00, 10_00)),
    ]
    assert await context.store.save_many(writes) == []

    response = await api.client.get("/v1/analytics/live")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["journey_map"] == context.journey_map.name
    assert [s["stage"] for s in body["stages"]] == list(stages)
    counts = {s["stage"]: s["customers"] for s in body["stages"]}
    assert counts == {s: {stages[1]: 2, stages[3]: 1}.get(s, 0) for s in stages}
    assert (body["open_carts"], body["cart_value"], body["value_at_risk"]) == (2, 52.5, 16.25)


async def test_live_follows_a_customer_moving_between_stages(api: Api) -> None:
    context = _context(api)
    stages = context.journey_map.stages
    first = [Write("ann", b"{}", 0, gauge=JourneyGauge(stages[0], None, 0, 0))]
    assert await context.store.save_many(first) == []
    moved = [Write("ann", b"{}", 1, gauge=JourneyGauge(stages[2], stages[0], 0, 0))]
    assert await context.store.save_many(moved) == []

    body = (await api.client.get("/v1/analytics/live")).json()

    counts = {s["stage"]: s["customers"] for s in body["stages"]}
    assert (counts[stages[0]], counts[stages[2]]) == (0, 1)
    assert body["open_carts"] == 0


async def test_openapi_documents_the_live_route(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()

    operation = schema["paths"]["/v1/analytics/live"]["get"]
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/LivePublic"}
    fields = schema["components"]["schemas"]["LivePublic"]["properties"]
    assert {"journey_map", "stages", "open_carts", "cart_value", "value_at_risk"} <= set(fields)
    assert "/map" not in schema["paths"], "the page is not part of the JSON API"


async def test_root_redirects_to_the_map_page(api: Api) -> None:
    response = await api.client.get("/")

    assert response.status_code == 307
    assert response.headers["location"] == "/map"


async def test_map_page_and_its_files_are_served_without_anything_from_elsewhere(
    api: Api,
) -> None:
    page = await api.client.get("/map", params={"customer": "ann"})
    script = await api.client.get("/static/map.js")
    style = await api.client.get("/static/map.css")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/map.js">' in page.text
    assert 'href="/static/map.css"' in page.text
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert style.status_code == 200
    assert style.headers["content-type"].startswith("text/css")
    for text in (page.text, script.text, style.text):  # no CDN: the machine may be offline
        assert "//cdn" not in text
        assert "https://" not in text.replace("http://www.w3.org/2000/svg", "")
    for route in ("/v1/analytics/funnel", "/v1/analytics/transitions", "/v1/analytics/live"):
        assert route in script.text, f"the page reads {route}"
    assert (await api.client.get("/static/nope.js")).status_code == 404
