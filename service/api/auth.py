"""The scope each route needs, as a FastAPI dependency: `dependencies=[requires(Scope.READ)]`.

A key is sent as `Authorization: Bearer <key>` or `X-API-Key: <key>` (if both are sent,
the `Authorization` header decides). With `api.auth` off
every request passes (development only). The key's id is kept in `request.state.key_id` for
the access log; the key itself is never logged.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import Depends, Request
from fastapi.params import Depends as DependsParam
from starlette.responses import Response

from models.access import Scope
from service.access import Denied, RateLimited
from service.api.context import ApiContext
from service.api.responses import problem
from service.api.schemas import Problem

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "HTTPBearer": {
        "type": "http", "scheme": "bearer", "description": "`Authorization: Bearer prc_...`",
    },
    "APIKeyHeader": {
        "type": "apiKey", "in": "header", "name": "X-API-Key",
        "description": "`X-API-Key: prc_...`",
    },
}  # fmt: skip
"""How OpenAPI describes the two ways to send a key (`document_keys` adds them)."""

GUARDED: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No valid API key (see `WWW-Authenticate`)"},
    403: {"model": Problem, "description": "The key lacks the scope this route needs"},
    429: {"model": Problem, "description": "The key is over its rate; see `Retry-After`"},
    503: {"model": Problem, "description": "Redis or Kafka unreachable; see `Retry-After`"},
}
"""Answers every key-protected route may give besides its own."""

UNROUTABLE: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No route: an id the path cannot carry (a newline)"}
}
"""For routes with an id in the path and no 404 of their own."""


def requires(scope: Scope) -> DependsParam:
    """A dependency that lets the request through only with a key granting `scope`."""
    return _admitter(scope, skip_when_metrics_open=False)


def requires_unless_open(scope: Scope) -> DependsParam:
    """For `/metrics`: no key needed while `api.metrics_open`, else as `requires(scope)`."""
    return _admitter(scope, skip_when_metrics_open=True)


async def admit(request: Request, scope: Scope) -> None:
    """What `requires(scope)` does, called by a hot route itself (no dependency to solve per
    request); the route must still declare `responses=GUARDED` so OpenAPI documents the key."""
    context: ApiContext = request.app.state.context
    if context.gate is not None:
        key = await context.gate.admit(_token(request), scope)
        request.state.key_id = key.id


def _admitter(scope: Scope, *, skip_when_metrics_open: bool) -> DependsParam:
    async def admitted(request: Request) -> None:  # headers read here: no sub-dependencies
        context: ApiContext = request.app.state.context
        if skip_when_metrics_open and context.settings.api.metrics_open:
            return
        await admit(request, scope)

    dependency: DependsParam = Depends(admitted)
    return dependency


def document_keys(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare the key schemes in an OpenAPI schema, on every operation that may answer 401
    (each guarded route documents it through `GUARDED`)."""
    schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if "401" in operation.get("responses", {}):
                operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
    return schema


def _token(request: Request) -> str | None:
    """The presented key: an `Authorization` header, when there is one, decides alone (a
    wrong one is refused even beside a good `X-API-Key`)."""
    authorization = request.headers.get("authorization")
    if authorization is None:
        return request.headers.get("x-api-key")
    scheme, _, credentials = authorization.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else authorization


async def refused(request: Request, exc: Exception) -> Response:
    """401/403 for `Denied`, 429 with Retry-After for `RateLimited`; both counted."""
    context: ApiContext = request.app.state.context
    if isinstance(exc, RateLimited):
        context.metrics.refused.labels("429").inc()
        return problem(429, str(exc), retry_after=max(1, math.ceil(exc.retry_after_s)))
    assert isinstance(exc, Denied)
    context.metrics.refused.labels(str(exc.status)).inc()
    response = problem(exc.status, exc.detail)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="parcours"'
    return response
