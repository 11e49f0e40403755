"""GET /v1/analytics/*: the window parameters, their 422s, defaults and documented schemas.
(The numbers themselves are checked against a recomputation in test_analytics_replay.)"""

from __future__ import annotations

from typing import Any

import pytest

from models.analytics import HOUR_MS, Fact, Leaving
from service.analytics import CustomerFacts, analytics_store
from tests.integration.api_fixtures import (
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
)

ROUTES = ("funnel", "transitions", "friction", "channels")
T0 = 1_569_888_000_000  # 2019-10-01T00:00Z


async def _get(api: Api, route: str, **params: str) -> Any:
    return await api.client.get(f"/v1/analytics/{route}", params=params)


def _errors(response: Any) -> list[tuple[list[str], str]]:
    assert response.status_code == 422, response.text
    return [(e["loc"], e["type"]) for e in response.json()["detail"]]


@pytest.mark.parametrize("route", ROUTES)
async def test_analytics_to_before_from_is_422_naming_to(api: Api, route: str) -> None:
    response = await _get(
        api, route, **{"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"}
    )

    assert _errors(response) == [(["query", "to"], "range_reversed")]


async def test_analytics_range_longer_than_the_retention_is_422_naming_from(api: Api) -> None:
    window = {"from": "2026-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}

    hourly = await _get(api, "funnel", **window, bucket="hour")
    daily = await _get(api, "funnel", **window, bucket="day")

    assert _errors(hourly) == [(["query", "from"], "range_too_long")]
    assert "840 hour buckets" in hourly.json()["detail"][0]["msg"]
    assert daily.status_code == 200
    assert len(daily.json()["buckets"]) == 59


async def test_analytics_unknown_segment_map_and_bucket_are_422s(api: Api) -> None:
    response = await _get(api, "channels", segment="first_channel:fax", journey_map="nope")
    bucket = await _get(api, "channels", bucket="week")
    naive = await _get(api, "channels", **{"from": "2026-11-01T10:00:00"})
    limit = await _get(api, "friction", limit="0")

    assert _errors(response) == [
        (["query", "journey_map"], "unknown_journey_map"),
        (["query", "segment"], "unknown_segment"),
    ]
    assert "b2b, retail" in response.json()["detail"][0]["msg"]
    assert _errors(bucket) == [(["query", "bucket"], "literal_error")]
    assert _errors(naive) == [(["query", "from"], "timezone_aware")]
    assert _errors(limit) == [(["query", "limit"], "greater_than_equal")]


@pytest.mark.parametrize("route", ROUTES)
async def test_analytics_without_data_answer_zeros_for_the_last_day(api: Api, route: str) -> None:
    response = await _get(api, route)

    assert response.status_code == 200, response.text
    body = response.json()
    window = body["window"]
    assert (window["journey_map"], window["segment"], window["bucket"]) == ("retail", "all", "hour")
    assert window["as_of"] is None
    assert window["complete_until"] is None
    if route != "channels":
        assert len(body["buckets"]) == 24
    if route == "funnel":
        assert [s["entered"] for s in body["stages"]] == [0] * 7
        assert body["stages"][0]["conversion"] is None


async def test_analytics_default_window_ends_with_the_newest_event_time(api: Api) -> None:
    store = analytics_store(api.app.state.context.redis, api.settings)
    fact = Fact(
        2, 0, T0 + 90 * 60_000, ("first_channel:app", "visitor:new", "risk:none"),
        ["e|awareness", "m|new|awareness", "c|awareness|app"], ["awareness"], (),
        T0 + 10 * HOUR_MS, None,
    )  # fmt: skip
    await store.record("retail", [CustomerFacts("c-1", [fact])])

    funnel = (await _get(api, "funnel", segment="first_channel:app", bucket_customers="1")).json()
    b2b = (await _get(api, "funnel", journey_map="b2b", bucket="day")).json()

    window = funnel["window"]
    assert window["to"] == "2019-10-01T02:00:00Z"
    assert window["from"] == "2019-09-30T02:00:00Z"
    assert window["as_of"] == "2019-10-01T01:30:00Z"
    assert window["complete_until"] == "2019-09-30T01:29:00Z"  # 24 h horizon and 60 s lateness
    assert funnel["buckets"][-1]["entered"]["awareness"] == 1
    assert funnel["buckets"][-1]["customers"]["awareness"] == 1
    assert funnel["stages"][0]["customers"] == 1
    assert b2b["stages"][0]["stage"] == "research"
    assert b2b["window"]["to"] == "2019-10-02T00:00:00Z"
    elsewhere = (await _get(api, "funnel", segment="first_channel:web")).json()
    assert elsewhere["stages"][0]["entered"] == 0


async def test_openapi_documents_the_analytics_routes_and_schemas(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()

    for route, model in zip(
        ROUTES,
        ("FunnelPublic", "TransitionsPublic", "FrictionPublic", "ChannelsPublic"),
        strict=True,
    ):
        operation = schema["paths"][f"/v1/analytics/{route}"]["get"]
        names = {p["name"] for p in operation["parameters"]}
        assert {"from", "to", "bucket", "segment", "journey_map"} <= names
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": f"#/components/schemas/{model}"}
    window = schema["components"]["schemas"]["WindowPublic"]["properties"]
    assert {"from", "to", "as_of", "complete_until"} <= set(window)
    customers = schema["components"]["schemas"]["FunnelStagePublic"]["properties"]["customers"]
    assert "0.81%" in customers["description"]


def _hour_of_facts(
    hour: int, touch: str, *, left: int, moved_on: int, loop: bool, offset: int
) -> list[CustomerFacts]:
    """`left + moved_on` customers after `touch` in hour `hour` from T0: `left` of them exit
    (or, with `loop`, move back) and the rest move on, all on partition 0."""
    at = T0 + hour * HOUR_MS + 60_000
    segments = ("first_channel:web", "visitor:new", "risk:none")
    found = []
    for i in range(left + moved_on):
        customer = f"{touch}-{hour}-{i}"
        gone = i < left
        leaving = None
        if gone and not loop:
            leaving = Leaving("retail", at, "decision", segments, (touch,), None, 3)
        fact = Fact(
            0, offset + i, at, segments, ["e|decision"], [], () if gone else (touch,),
            at + 1 if leaving else at + 10 * 86_400_000, None, leaving=leaving,
            looped=(touch,) if gone and loop else (),
        )  # fmt: skip
        found.append(CustomerFacts(customer, [fact]))
    return found


async def test_changes_flag_exit_and_loop_jumps_with_their_start_and_customers(api: Api) -> None:
    store = analytics_store(api.app.state.context.redis, api.settings)
    pay, search = "page_view|web|https://s.example/pay", "search|web|"
    offset = 0
    for hour in range(15):  # baseline hours 0-11, recent 12-14, both jump at hour 13
        high = hour >= 13
        for touch, loop in ((pay, False), (search, True)):
            left = 16 if high else 4
            batch = _hour_of_facts(hour, touch, left=left, moved_on=20 - left, loop=loop,
                                   offset=offset)  # fmt: skip
            offset += 20
            await store.record("retail", batch)
    later = T0 + 3 * 86_400_000  # the watermark passes every exit deadline
    tick = Fact(0, offset, later, ("first_channel:web", "visitor:new", "risk:none"), [], [], (),
                later + 10 * 86_400_000, None)  # fmt: skip
    await store.record("retail", [CustomerFacts("clock", [tick])])

    asked = {"at": "2019-10-01T14:30:00Z", "recent_hours": "3", "baseline_hours": "12"}
    body = (await _get(api, "changes", **asked, min_count="10")).json()
    none_yet = (await _get(api, "changes", **{**asked, "at": "2019-10-01T12:30:00Z"})).json()

    assert body["exits"] == body["loops"] == {
        "baseline_from": "2019-10-01T00:00:00Z", "recent_from": "2019-10-01T12:00:00Z",
        "to": "2019-10-01T15:00:00Z",
    }  # fmt: skip
    found = {(c["kind"], c["type"], c["channel"], c["target"]): c for c in body["changes"]}
    assert set(found) == {
        ("exit", "page_view", "web", "https://s.example/pay"), ("loop", "search", "web", ""),
    }  # fmt: skip
    for change in found.values():
        assert change["started"] == "2019-10-01T13:00:00Z"
        assert (change["customers"], change["seen"]) == (32, 40)
        assert change["rate"] == pytest.approx(0.8)
        assert change["baseline_rate"] == pytest.approx(0.2)
        assert change["z"] >= body["rule"]["z"]
    assert none_yet["changes"] == []


async def test_changes_judge_exits_only_on_decided_hours_and_refuse_bad_spans(api: Api) -> None:
    store = analytics_store(api.app.state.context.redis, api.settings)
    await store.record("retail", _hour_of_facts(5, "search|web|", left=2, moved_on=2,
                                                loop=True, offset=0))  # fmt: skip

    body = (await _get(api, "changes")).json()
    too_long = await _get(api, "changes", recent_hours="48", baseline_hours="900")
    too_many = await _get(api, "changes", recent_hours="49")

    assert body["loops"]["to"] == "2019-10-01T06:00:00Z"  # after the newest event's hour
    assert body["exits"]["to"] == "2019-09-30T05:00:00Z"  # 24 h horizon and 60 s lateness
    assert _errors(too_long) == [(["query", "baseline_hours"], "range_too_long")]
    assert _errors(too_many)[0][0] == ["query", "recent_hours"]


async def test_times_whose_buckets_leave_years_1_to_9999_are_422s_not_500s(api: Api) -> None:
    # found by the contract test: `at` three days into year 1 put the baseline in year 0
    early_at = await _get(api, "changes", at="0001-01-03T00:00:00Z")
    late_at = await _get(api, "changes", at="9999-12-31T23:00:00Z")
    # an offset east of UTC on the first day of year 1 is before year 1 in UTC
    early_from = await _get(
        api, "funnel", **{"from": "0001-01-01T00:00:00+01:00", "to": "0001-01-02T00:00:00Z"}
    )
    days = {"bucket": "day"}
    late_to = await _get(
        api, "funnel", **days, **{"from": "9999-12-30T00:00:00Z", "to": "9999-12-31T23:59:00Z"}
    )
    first_day = await _get(
        api, "funnel", **days, **{"from": "0001-01-01T00:00:00Z", "to": "0001-01-03T00:00:00Z"}
    )

    assert _errors(early_at) == [(["query", "at"], "out_of_range")]
    assert _errors(late_at) == [(["query", "at"], "out_of_range")]
    assert _errors(early_from) == [(["query", "from"], "out_of_range")]
    assert _errors(late_to) == [(["query", "to"], "out_of_range")]
    assert first_day.status_code == 200, first_day.text
    assert [b["start"] for b in first_day.json()["buckets"]] == [
        "0001-01-01T00:00:00Z", "0001-01-02T00:00:00Z",
    ]  # fmt: skip


async def test_times_that_are_not_rfc_3339_text_are_422s_naming_the_parameter(api: Api) -> None:
    # found by the contract test: `to=6` was read as 6 s after the epoch and answered 200
    bare_to = await _get(api, "transitions", to="6")
    bare_at = await _get(api, "changes", at="1700000000")
    written = await _get(api, "transitions", to="2019-10-01T00:00:00Z")

    assert _errors(bare_to) == [(["query", "to"], "value_error")]
    assert _errors(bare_at) == [(["query", "at"], "value_error")]
    assert written.status_code == 200, written.text
