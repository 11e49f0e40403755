"""The OpenAPI contract, checked by schemathesis against `parcours api` over TCP (keys
required, an admin key sent): for every operation, generated requests, valid and not, never
get a 5xx, and every answer matches its documented status, headers and schema.

Bounded: `EXAMPLES` requests per operation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import allow_header_conformance, positive_data_acceptance

from models.access import Scope, issue
from service.access import KeyStore
from service.api.app import create_app
from service.embedded import free_port
from service.settings import Settings
from service.store import connect_redis
from tests.conftest import make_settings
from tests.e2e.conftest import Role, wait_healthy
from tests.support import settings_env

EXAMPLES = 40
RUNTIME_RULES = (
    "/v1/analytics/",
    "/v1/events",
    "/v1/webhooks",
    "/recommendations",
    "/v1/experiments/",
)
"""Operations whose valid requests may still be refused by rules no JSON Schema can state:
known journey maps and time ranges (`to` after `from`, at most the retention), an event's
type-dependent fields and clock skew, a webhook target that must resolve to a public address,
a recommendation limit set by `PARCOURS_RECOMMEND_MAX_LIMIT`, an experiment's distinct
variant names and the reserved name `holdout`. For them a 422 on a
schema-valid request is expected; every other check still applies."""


async def _admin_key(settings: Settings) -> str:
    token, key = issue("contract", frozenset({Scope.ADMIN}), now_ms=0, rate_per_s=100_000)
    redis = connect_redis(settings.redis.url, socket_timeout_s=2.0, max_connections=1)
    try:
        await KeyStore(redis, prefix=settings.redis.key_prefix).add(key)
    finally:
        await redis.aclose()
    return token


@pytest.fixture(scope="module")
def served(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(base URL, admin key) of one `parcours api` for the module."""
    settings = make_settings(kafka_bootstrap, redis_url, auth=True)
    key = asyncio.run(_admin_key(settings))
    port = free_port()
    log: Path = tmp_path_factory.mktemp("contract") / "api.log"
    env = settings_env(settings) | {"PARCOURS_WEBHOOKS_ALLOW_PRIVATE_TARGETS": "false"}
    api = Role(["api", "--port", str(port)], env, log)
    base = f"http://127.0.0.1:{port}"
    wait_healthy(api, base)
    yield base, key
    api.close()
    assert "Traceback" not in api.output(), api.output()


schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
"""The documented contract, as the app publishes it at /openapi.json (read without serving)."""


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_keeps_its_contract(
    case: schemathesis.Case, served: tuple[str, str]
) -> None:
    base, key = served
    excluded = []
    if any(part in case.path for part in RUNTIME_RULES):
        excluded.append(positive_data_acceptance)
    if case.path.startswith("/v1/customers/"):
        # customer ids may hold "/", so `DELETE /v1/customers/{id}` also serves
        # `/v1/customers/a/journey` (erasing customer "a/journey"): `Allow` rightly says so
        excluded.append(allow_header_conformance)
    case.call_and_validate(base_url=base, headers={"X-API-Key": key}, excluded_checks=excluded)
