"""API keys end to end: every route's scope (401 without a key, 403 with the wrong one), keys
made and revoked over HTTP, only digests in Redis, per-key rate limits and `/metrics` access."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from prometheus_client.parser import text_string_to_metric_families

from models.access import Scope, issue
from service.access import KeyStore
from service.settings import ApiSettings, Settings
from tests.integration.api_fixtures import Api, event, running_api

PUBLIC = None
"""Routes anyone may call: probes, published contracts, the page (its data needs a key)."""

SCOPES: dict[tuple[str, str], Scope | None] = {
    ("POST", "/v1/events"): Scope.INGEST,
    ("GET", "/v1/customers/{customer_id:path}/journey"): Scope.READ,
    ("GET", "/v1/customers/{customer_id:path}/predictions"): Scope.READ,
    ("GET", "/v1/customers/{customer_id:path}/recommendations"): Scope.READ,
    ("POST", "/v1/recommendations:batch"): Scope.READ,
    ("GET", "/v1/models"): Scope.ADMIN,
    ("GET", "/v1/experiments"): Scope.ADMIN,
    ("PUT", "/v1/experiments/{name}"): Scope.ADMIN,
    ("GET", "/v1/experiments/{name}"): Scope.ADMIN,
    ("DELETE", "/v1/experiments/{name}"): Scope.ADMIN,
    ("POST", "/v1/experiments/{name}/decisions"): Scope.READ,
    ("POST", "/v1/webhooks"): Scope.ADMIN,
    ("GET", "/v1/webhooks"): Scope.ADMIN,
    ("GET", "/v1/webhooks/{webhook_id}"): Scope.ADMIN,
    ("PATCH", "/v1/webhooks/{webhook_id}"): Scope.ADMIN,
    ("DELETE", "/v1/webhooks/{webhook_id}"): Scope.ADMIN,
    ("GET", "/v1/webhooks/{subscription_id}/deliveries"): Scope.ADMIN,
    ("GET", "/v1/webhooks/{subscription_id}/health"): Scope.ADMIN,
    ("POST", "/v1/webhooks/{subscription_id}/deliveries/{delivery_id}:redeliver"): Scope.ADMIN,
    ("GET", "/v1/analytics/funnel"): Scope.ADMIN,
    ("GET", "/v1/analytics/transitions"): Scope.ADMIN,
    ("GET", "/v1/analytics/friction"): Scope.ADMIN,
    ("GET", "/v1/analytics/channels"): Scope.ADMIN,
    ("GET", "/v1/analytics/changes"): Scope.ADMIN,
    ("GET", "/v1/analytics/live"): Scope.ADMIN,
    ("GET", "/v1/customers/{customer_id:path}/export"): Scope.ADMIN,
    ("DELETE", "/v1/customers/{customer_id:path}"): Scope.ADMIN,
    ("POST", "/v1/keys"): Scope.ADMIN,
    ("GET", "/v1/keys"): Scope.ADMIN,
    ("DELETE", "/v1/keys/{key_id}"): Scope.ADMIN,
    ("GET", "/metrics"): PUBLIC,  # by default; see the metrics tests below
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/v1/schema/event"): PUBLIC,
    ("GET", "/v1/schema/recommendations"): PUBLIC,
    ("GET", "/v1/schema/triggers"): PUBLIC,
    ("GET", "/"): PUBLIC,
    ("GET", "/map"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
}

WRONG: dict[Scope, frozenset[Scope]] = {
    Scope.INGEST: frozenset({Scope.READ}),
    Scope.READ: frozenset({Scope.INGEST}),
    Scope.ADMIN: frozenset({Scope.READ, Scope.INGEST}),
}
"""For each needed scope, the most a key can hold without it."""


def _secured(settings: Settings, **api: Any) -> Settings:
    return settings.model_copy(update={"api": ApiSettings(auth=True, key_cache_s=0, **api)})


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with running_api(_secured(settings)) as running:
        yield running


async def _key(api: Api, *scopes: Scope, rate_per_s: float | None = None) -> str:
    token, key = issue("test", frozenset(scopes), now_ms=0, rate_per_s=rate_per_s)
    await KeyStore(api.app.state.context.redis, prefix=api.settings.redis.key_prefix).add(key)
    return token


def _url(path: str) -> str:
    fill = {"customer_id": "c-1", "key_id": "0123456789ab", "delivery_id": "abc"}
    return re.sub(r"\{(\w+)(:path)?\}", lambda m: fill.get(m[1], "wh_none"), path)


def _routes(api: Api) -> list[tuple[str, str]]:
    return [
        (method, str(route.path))
        for route in iter_route_contexts(api.app.routes)
        for method in getattr(route, "methods", None) or ()
        if method != "HEAD"
    ]


async def test_every_route_is_classified_by_the_scope_it_needs(api: Api) -> None:
    assert sorted(_routes(api)) == sorted(SCOPES)


async def test_each_protected_route_401_without_key_403_with_wrong_scope_else_runs(
    api: Api,
) -> None:
    wrong = {scope: await _key(api, *held) for scope, held in WRONG.items()}
    right = {scope: await _key(api, scope) for scope in Scope}
    admin = right[Scope.ADMIN]
    checked = 0
    for (method, path), scope in SCOPES.items():
        if scope is None:
            continue
        url = _url(path)
        body = {"json": {}} if method in ("POST", "PATCH") else {}

        anonymous = await api.client.request(method, url, **body)
        forbidden = await api.client.request(
            method, url, headers={"Authorization": f"Bearer {wrong[scope]}"}, **body
        )
        allowed = [
            await api.client.request(method, url, headers={"X-API-Key": token}, **body)
            for token in (right[scope], admin)
        ]

        assert anonymous.status_code == 401, (method, path, anonymous.text)
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        assert forbidden.status_code == 403, (method, path, forbidden.text)
        assert f"'{scope}' scope" in forbidden.json()["detail"]
        for response in allowed:
            assert response.status_code not in (401, 403, 429, 500), (method, path, response.text)
        checked += 1
    assert checked == sum(scope is not None for scope in SCOPES.values())


async def test_public_routes_answer_without_a_key(api: Api) -> None:
    for (method, path), scope in SCOPES.items():
        if scope is None:
            response = await api.client.request(method, _url(path))
            assert response.status_code in (200, 307), (path, response.status_code)


@pytest.mark.parametrize(
    ("header", "why"),
    [
        ("Bearer nonsense", "malformed"),
        ("Bearer prc_0123456789ab_" + "a" * 43, "not valid"),
        ("Basic dXNlcjpwYXNz", "malformed"),
        ("Bearer", "required"),
    ],
)
async def test_a_bad_or_unknown_key_is_401_naming_why(api: Api, header: str, why: str) -> None:
    response = await api.client.get("/v1/customers/c-1/journey", headers={"Authorization": header})

    assert response.status_code == 401
    assert why in response.json()["detail"]


async def test_a_wrong_authorization_header_is_refused_beside_a_good_x_api_key(api: Api) -> None:
    good = await _key(api, Scope.READ)
    headers = {"Authorization": "Bearer prc_0123456789ab_" + "a" * 43, "X-API-Key": good}

    both = await api.client.get("/v1/customers/c-1/journey", headers=headers)
    alone = await api.client.get("/v1/customers/c-1/journey", headers={"X-API-Key": good})

    assert both.status_code == 401
    assert alone.status_code == 404


async def test_a_right_id_with_a_wrong_secret_is_refused(api: Api) -> None:
    token = await _key(api, Scope.READ)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")

    response = await api.client.get("/v1/customers/c-1/journey", headers={"X-API-Key": forged})

    assert response.status_code == 401


async def test_keys_made_over_http_work_list_without_secrets_and_stop_when_revoked(
    api: Api,
) -> None:
    admin = {"X-API-Key": await _key(api, Scope.ADMIN)}

    made = await api.client.post(
        "/v1/keys", headers=admin, json={"name": "shop front", "scopes": ["ingest"]}
    )
    token = made.json()["key"]
    ingest = {"X-API-Key": token}
    sent = await api.client.post("/v1/events", headers=ingest, json=event(1))
    read = await api.client.get("/v1/customers/c-1/journey", headers=ingest)
    listed = await api.client.get("/v1/keys", headers=admin)
    stored = await api.app.state.context.redis.hgetall(f"{api.settings.redis.key_prefix}:keys")
    revoked = await api.client.delete(f"/v1/keys/{made.json()['id']}", headers=admin)
    after = await api.client.post("/v1/events", headers=ingest, json=event(2))
    again = await api.client.delete(f"/v1/keys/{made.json()['id']}", headers=admin)
    unknown = await api.client.delete("/v1/keys/ffffffffffff", headers=admin)

    assert made.status_code == 201
    assert made.headers["Location"] == f"/v1/keys/{made.json()['id']}"
    assert sent.status_code == 202
    assert read.status_code == 403
    rows = {row["name"]: row for row in listed.json()["keys"]}
    assert rows["shop front"]["scopes"] == ["ingest"]
    assert rows["shop front"]["revoked_at"] is None
    assert not any("key" in row or "digest" in row for row in rows.values())
    secret = token.rsplit("_", 1)[1]
    assert all(secret.encode() not in value for value in stored.values())
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert after.status_code == 401
    assert "revoked" in after.json()["detail"]
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "scopes": ["root"]}, "scopes"),
        ({"name": "", "scopes": ["read"]}, "name"),
        ({"name": "x", "scopes": ["read"], "rate_per_s": 0}, "rate_per_s"),
        ({"name": "x", "scopes": ["read"], "owner": "me"}, "owner"),
    ],
)
async def test_bad_key_requests_are_422_naming_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    admin = {"X-API-Key": await _key(api, Scope.ADMIN)}

    response = await api.client.post("/v1/keys", headers=admin, json=body)

    assert response.status_code == 422
    assert field in {str(part) for error in response.json()["detail"] for part in error["loc"]}


async def test_a_key_over_its_rate_gets_429_with_retry_after_and_is_counted(api: Api) -> None:
    slow = {"X-API-Key": await _key(api, Scope.READ, rate_per_s=0.5)}  # burst: one request
    other = {"X-API-Key": await _key(api, Scope.READ)}

    first = await api.client.get("/v1/customers/c-1/journey", headers=slow)
    second = await api.client.get("/v1/customers/c-1/journey", headers=slow)
    unaffected = await api.client.get("/v1/customers/c-1/journey", headers=other)
    metrics = await api.client.get("/metrics")

    assert first.status_code == 404  # no such customer yet: the route ran
    assert second.status_code == 429
    assert int(second.headers["Retry-After"]) == 2
    assert unaffected.status_code == 404
    refused = {
        sample.labels["status"]: sample.value
        for family in text_string_to_metric_families(metrics.text)
        if family.name == "parcours_api_refused"
        for sample in family.samples
        if sample.name == "parcours_api_refused_total"
    }
    assert refused == {"429": 1.0}


async def test_closed_metrics_need_an_admin_key(settings: Settings) -> None:
    async with running_api(_secured(settings, metrics_open=False)) as api:
        read, admin = await _key(api, Scope.READ), await _key(api, Scope.ADMIN)

        anonymous = await api.client.get("/metrics")
        reader = await api.client.get("/metrics", headers={"X-API-Key": read})
        operator = await api.client.get("/metrics", headers={"X-API-Key": admin})
        health = await api.client.get("/healthz")

    assert anonymous.status_code == 401
    assert reader.status_code == 403
    assert operator.status_code == 200
    assert "parcours_http_requests_total" in operator.text
    assert health.status_code == 200


async def test_without_auth_every_route_is_open(settings: Settings) -> None:
    async with running_api(settings) as api:
        response = await api.client.get("/v1/keys")

    assert response.status_code == 200


async def test_openapi_declares_the_key_schemes_on_exactly_the_protected_operations(
    api: Api,
) -> None:
    schema = api.app.openapi()
    documented = {
        (method.upper(), path): "security" in operation
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }
    expected = {
        (method, re.sub(r":path\}", "}", path)): scope is not PUBLIC
        for (method, path), scope in SCOPES.items()
        if (method, re.sub(r":path\}", "}", path)) in documented
    }

    assert set(schema["components"]["securitySchemes"]) == {"HTTPBearer", "APIKeyHeader"}
    assert len(expected) == len(documented)
    assert documented == expected
