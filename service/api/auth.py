"""The scope each route needs, as a FastAPI dependency: `dependencies=[requires(Scope.READ)]`.

A key is sent as `Authorization: Bearer <key>` or `X-API-Key: <key>` (if both are sent,
the `Authorization` header decides). With `api.auth` off
every request passes (development only). The key's id is kept in `request.state.key_id` for
the access log; the key itself is never logged.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.params import Depends as DependsParam
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import Response

from models.access import Scope
from service.access import Denied, RateLimited
from service.api.context import ApiContext
from service.api.responses import problem
from service.api.schemas import Problem

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer prc_...`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: prc_...`")

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

Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]
Header = Annotated[str | None, Security(_header)]


def requires(scope: Scope) -> DependsParam:
    """A dependency that lets the request through only with a key granting `scope`."""
    return _admitter(scope, skip_when_metrics_open=False)


def requires_unless_open(scope: Scope) -> DependsParam:
    """For `/metrics`: no key needed while `api.metrics_open`, else as `requires(scope)`."""
    return _admitter(scope, skip_when_metrics_open=True)


def _admitter(scope: Scope, *, skip_when_metrics_open: bool) -> DependsParam:
    async def admit(request: Request, bearer: Bearer, header: Header) -> None:
        context: ApiContext = request.app.state.context
        if context.gate is None or (skip_when_metrics_open and context.settings.api.metrics_open):
            return
        token = _token(request, header)
        key = await context.gate.admit(token, scope)
        request.state.key_id = key.id

    dependency: DependsParam = Depends(admit)
    return dependency


def _token(request: Request, header: str | None) -> str | None:
    """The presented key: an `Authorization` header, when there is one, decides alone (a
    wrong one is refused even beside a good `X-API-Key`)."""
    authorization = request.headers.get("authorization")
    if authorization is None:
        return header
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
