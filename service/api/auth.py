"""The scope each route needs, as a FastAPI dependency: `dependencies=[requires(Scope.READ)]`.

A key is sent as `Authorization: Bearer <key>` or `X-API-Key: <key>`. With `api.auth` off
every request passes (development only). The key's id is kept in `request.state.key_id` for
the access log; the key itself is never logged.
"""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.params import Depends as DependsParam
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import Response

from models.access import Scope
from service.access import Denied, RateLimited
from service.api.context import ApiContext
from service.api.responses import problem

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer prc_...`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: prc_...`")

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
        token = bearer.credentials if bearer is not None else header
        key = await context.gate.admit(token, scope)
        request.state.key_id = key.id

    dependency: DependsParam = Depends(admit)
    return dependency


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
