"""/v1/webhooks on the real app and Redis: every route, its errors, and secrets never leaking."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.settings import Settings, WebhookSettings
from service.subscriptions import SubscriptionStore
from tests.integration.api_fixtures import (
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
    running_api,
)

URL = "https://93.184.216.34/hooks/parcours"
SECRET = "whsec-0123456789abcdefXYZ1"
PUBLIC_FIELDS = {
    "id", "url", "triggers", "filter", "enabled", "description", "created_at",
    "secret_set", "secret_last4",
}  # fmt: skip


async def _create(api: Api, **fields: Any) -> dict[str, Any]:
    response = await api.client.post("/v1/webhooks", json={"url": URL, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _store(api: Api) -> SubscriptionStore:
    return api.app.state.context.subscriptions  # type: ignore[no-any-return]


def _locs(response: Any) -> list[list[str | int]]:
    assert response.status_code == 422, response.text
    return [error["loc"] for error in response.json()["detail"]]


async def test_create_returns_201_with_the_generated_secret_once(api: Api) -> None:
    response = await api.client.post(
        "/v1/webhooks",
        json={
            "url": URL,
            "triggers": ["cart.abandoned", "customer.converted"],
            "filter": {"min_cart_value": 50, "stages": ["decision", "purchase"]},
            "description": "CRM: abandoned carts",
        },
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == PUBLIC_FIELDS | {"secret"}
    assert body["id"].startswith("wh_")
    assert response.headers["location"] == f"/v1/webhooks/{body['id']}"
    assert body["triggers"] == ["cart.abandoned", "customer.converted"]
    assert body["filter"] == {"min_cart_value": 50.0, "stages": ["decision", "purchase"]}
    assert body["enabled"] is True
    assert body["description"] == "CRM: abandoned carts"
    assert body["created_at"].endswith("Z")
    assert len(body["secret"]) >= 32
    assert body["secret_set"] is True
    assert body["secret_last4"] == body["secret"][-4:]
    stored = await _store(api).get(body["id"])
    assert stored is not None
    assert stored.secret == body["secret"]

    again = await api.client.get(f"/v1/webhooks/{body['id']}")
    assert again.status_code == 200
    assert again.json() == {k: v for k, v in body.items() if k != "secret"}


async def test_create_with_a_secret_stores_it_and_never_echoes_it(api: Api) -> None:
    created = await _create(api, secret=SECRET)

    assert created["secret"] is None
    assert created["secret_last4"] == "XYZ1"
    stored = await _store(api).get(created["id"])
    assert stored is not None
    assert stored.secret == SECRET
    for response in (
        await api.client.get("/v1/webhooks"),
        await api.client.get(f"/v1/webhooks/{created['id']}"),
        await api.client.patch(f"/v1/webhooks/{created['id']}", json={"enabled": False}),
    ):
        assert SECRET not in response.text
        assert SECRET[:-4] not in response.text


async def test_create_defaults_to_every_trigger_no_filter_enabled(api: Api) -> None:
    created = await _create(api)

    assert created["triggers"] == []
    assert created["filter"] == {"min_cart_value": None, "stages": None}
    assert created["enabled"] is True
    assert created["description"] is None


async def test_list_returns_every_subscription_oldest_first_without_secrets(api: Api) -> None:
    created = [await _create(api, description=f"n{i}") for i in range(3)]
    # created_at has millisecond resolution: creations within one millisecond go by id
    ids = [w["id"] for w in sorted(created, key=lambda w: (w["created_at"], w["id"]))]

    response = await api.client.get("/v1/webhooks")

    assert response.status_code == 200
    webhooks = response.json()["webhooks"]
    assert [w["id"] for w in webhooks] == ids
    assert all(set(w) == PUBLIC_FIELDS for w in webhooks)


async def test_list_is_empty_without_subscriptions(api: Api) -> None:
    response = await api.client.get("/v1/webhooks")

    assert response.status_code == 200
    assert response.json() == {"webhooks": []}


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_unknown_id_is_404(api: Api, method: str) -> None:
    body = {"enabled": False} if method == "PATCH" else None

    response = await api.client.request(method, "/v1/webhooks/wh_nope", json=body)

    assert response.status_code == 404
    assert response.json() == {"detail": "no webhook subscription 'wh_nope'"}


async def test_delete_returns_204_then_the_subscription_is_gone(api: Api) -> None:
    created = await _create(api)
    before = await _store(api).version()

    response = await api.client.delete(f"/v1/webhooks/{created['id']}")

    assert response.status_code == 204
    assert response.content == b""
    assert (await api.client.get(f"/v1/webhooks/{created['id']}")).status_code == 404
    assert (await api.client.delete(f"/v1/webhooks/{created['id']}")).status_code == 404
    assert await _store(api).version() > before


async def test_patch_changes_only_the_given_fields(api: Api) -> None:
    created = await _create(
        api,
        triggers=["cart.abandoned"],
        filter={"min_cart_value": 10},
        description="keep me",
        secret=SECRET,
    )
    path = f"/v1/webhooks/{created['id']}"

    response = await api.client.patch(path, json={"enabled": False, "triggers": []})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["enabled"] is False
    assert body["triggers"] == []
    assert body["secret"] is None
    unchanged = {"id", "url", "filter", "description", "created_at", "secret_last4"}
    assert {k: body[k] for k in unchanged} == {k: created[k] for k in unchanged}
    assert (await api.client.get(path)).json() == {k: v for k, v in body.items() if k != "secret"}


async def test_patch_replaces_or_clears_filter_and_description(api: Api) -> None:
    created = await _create(api, filter={"min_cart_value": 10, "stages": ["decision"]})
    path = f"/v1/webhooks/{created['id']}"

    replaced = await api.client.patch(path, json={"filter": {"stages": ["loyalty"]}})
    assert replaced.json()["filter"] == {"min_cart_value": None, "stages": ["loyalty"]}

    await api.client.patch(path, json={"description": "now described"})
    cleared = await api.client.patch(path, json={"filter": None, "description": None})
    assert cleared.json()["filter"] == {"min_cart_value": None, "stages": None}
    assert cleared.json()["description"] is None


async def test_patch_url_is_checked_like_create(api: Api) -> None:
    created = await _create(api)
    path = f"/v1/webhooks/{created['id']}"

    refused = await api.client.patch(path, json={"url": "https://10.0.0.1/"})
    assert _locs(refused) == [["body", "url"]]
    assert (await api.client.get(path)).json()["url"] == URL

    moved = await api.client.patch(path, json={"url": "https://93.184.216.35:8443/h"})
    assert moved.json()["url"] == "https://93.184.216.35:8443/h"


async def test_patch_sets_a_given_secret_without_echoing_it(api: Api) -> None:
    created = await _create(api)
    new_secret = "rotated-secret-value-0042"

    response = await api.client.patch(f"/v1/webhooks/{created['id']}", json={"secret": new_secret})

    assert response.json()["secret"] is None
    assert response.json()["secret_last4"] == "0042"
    assert new_secret not in response.text
    stored = await _store(api).get(created["id"])
    assert stored is not None
    assert stored.secret == new_secret


async def test_patch_rotate_secret_returns_the_new_secret_once(api: Api) -> None:
    created = await _create(api)
    path = f"/v1/webhooks/{created['id']}"

    response = await api.client.patch(path, json={"rotate_secret": True})

    rotated = response.json()["secret"]
    assert rotated
    assert rotated != created["secret"]
    stored = await _store(api).get(created["id"])
    assert stored is not None
    assert stored.secret == rotated
    assert rotated not in (await api.client.get(path)).text


async def test_patch_secret_and_rotate_secret_together_is_422(api: Api) -> None:
    created = await _create(api)

    response = await api.client.patch(
        f"/v1/webhooks/{created['id']}", json={"secret": SECRET, "rotate_secret": True}
    )

    assert _locs(response) == [["body", "rotate_secret"]]


@pytest.mark.parametrize("field", ["url", "triggers", "enabled", "secret"])
async def test_patch_null_for_a_required_field_is_422(api: Api, field: str) -> None:
    created = await _create(api)

    response = await api.client.patch(f"/v1/webhooks/{created['id']}", json={field: None})

    assert _locs(response) == [["body", field]]


async def test_every_change_bumps_the_version_and_reads_do_not(api: Api) -> None:
    store = _store(api)
    versions = [await store.version()]
    created = await _create(api)
    versions.append(await store.version())
    path = f"/v1/webhooks/{created['id']}"
    await api.client.patch(path, json={"enabled": False})
    versions.append(await store.version())
    await api.client.patch(path, json={"rotate_secret": True})
    versions.append(await store.version())

    await api.client.get(path)
    await api.client.get("/v1/webhooks")
    await api.client.patch(path, json={})
    await api.client.patch(path, json={"url": "https://127.0.0.1/"})
    assert await store.version() == versions[-1], "reads, no-ops and refusals change nothing"

    await api.client.delete(path)
    versions.append(await store.version())
    assert versions == sorted(set(versions)), versions


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["body", "url"]),
        ({"url": ""}, ["body", "url"]),
        ({"url": URL, "triggers": ["cart.abandoned", "cart.exploded"]}, ["body", "triggers", 1]),
        ({"url": URL, "triggers": "cart.abandoned"}, ["body", "triggers"]),
        ({"url": URL, "filter": {"min_cart_value": -1}}, ["body", "filter", "min_cart_value"]),
        ({"url": URL, "filter": {"stages": []}}, ["body", "filter", "stages"]),
        ({"url": URL, "filter": {"stage": ["decision"]}}, ["body", "filter", "stage"]),
        ({"url": URL, "secret": "too-short"}, ["body", "secret"]),
        ({"url": URL, "secret": "x" * 257}, ["body", "secret"]),
        ({"url": URL, "secret": "has spaces in the secret"}, ["body", "secret"]),
        ({"url": URL, "description": "d" * 501}, ["body", "description"]),
        ({"url": URL, "enabled": "sometimes"}, ["body", "enabled"]),
        ({"url": URL, "trigers": []}, ["body", "trigers"]),
        ({"url": URL, "id": "wh_mine"}, ["body", "id"]),
    ],
)
async def test_bad_body_is_422_naming_the_field(
    api: Api, body: dict[str, Any], loc: list[str | int]
) -> None:
    response = await api.client.post("/v1/webhooks", json=body)

    assert _locs(response) == [loc]
    assert (await api.client.get("/v1/webhooks")).json() == {"webhooks": []}


@pytest.mark.parametrize("secret", ["tooshort", "a secret with spaces in it", "y" * 300])
async def test_rejected_secret_is_not_echoed_in_the_422(api: Api, secret: str) -> None:
    response = await api.client.post("/v1/webhooks", json={"url": URL, "secret": secret})

    assert _locs(response) == [["body", "secret"]]
    assert secret not in response.text


async def test_unknown_stage_is_422_naming_it_and_the_map_stages(api: Api) -> None:
    response = await api.client.post(
        "/v1/webhooks", json={"url": URL, "filter": {"stages": ["decision", "checkout"]}}
    )

    assert _locs(response) == [["body", "filter", "stages", 1]]
    error = response.json()["detail"][0]
    assert error["type"] == "unknown_stage"
    assert "'checkout'" in error["msg"]
    assert "'awareness'" in error["msg"]


async def test_unknown_stage_and_refused_url_are_reported_together(api: Api) -> None:
    response = await api.client.post(
        "/v1/webhooks", json={"url": "https://[::1]/", "filter": {"stages": ["nope"]}}
    )

    assert _locs(response) == [["body", "filter", "stages", 0], ["body", "url"]]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://93.184.216.34/hook", "scheme must be https"),
        ("https://localhost/hook", "local host name"),
        ("https://127.0.0.1:8443/hook", "loopback"),
        ("https://10.1.2.3/hook", "private"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://[::ffff:192.168.0.1]/hook", "private"),
        ("https://[fe80::1]/hook", "link-local"),
        ("https://2130706433/hook", "loopback"),
        ("https://user:pass@93.184.216.34/hook", "credentials"),
        ("https://nothing.invalid/hook", "nothing.invalid"),
    ],
)
async def test_refused_target_is_422_naming_url_with_the_reason(
    api: Api, url: str, reason: str
) -> None:
    response = await api.client.post("/v1/webhooks", json={"url": url})

    assert _locs(response) == [["body", "url"]]
    error = response.json()["detail"][0]
    assert error["type"] == "target_refused"
    assert reason in error["msg"]
    assert await _store(api).list() == []


async def test_development_settings_allow_http_and_private_targets(settings: Settings) -> None:
    dev = settings.model_copy(
        update={"webhooks": WebhookSettings(allow_http=True, allow_private_targets=True)}
    )
    async with running_api(dev) as api:
        created = await _create(api, url="http://localhost:9000/hook")

    assert created["url"] == "http://localhost:9000/hook"


@pytest.fixture
async def http_only_api(settings: Settings) -> AsyncIterator[Api]:
    allowed = settings.model_copy(update={"webhooks": WebhookSettings(allow_http=True)})
    async with running_api(allowed) as running:
        yield running


async def test_allowing_http_still_refuses_private_targets(http_only_api: Api) -> None:
    public = await _create(http_only_api, url="http://93.184.216.34/hook")
    refused = await http_only_api.client.post("/v1/webhooks", json={"url": "http://10.0.0.1/"})

    assert public["url"] == "http://93.184.216.34/hook"
    assert _locs(refused) == [["body", "url"]]


async def test_openapi_documents_the_webhook_routes_with_examples(api: Api) -> None:
    schema = (await api.client.get("/openapi.json")).json()
    paths = schema["paths"]
    components = schema["components"]["schemas"]

    assert set(paths["/v1/webhooks"]) == {"get", "post"}
    assert set(paths["/v1/webhooks/{webhook_id}"]) == {"get", "patch", "delete"}
    assert components["WebhookCreate"]["examples"]
    assert components["WebhookCreate"]["additionalProperties"] is False
    assert "secret" not in components["WebhookPublic"]["properties"]
