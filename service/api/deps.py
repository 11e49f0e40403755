"""Request-scoped access to the lifespan's shared objects, as `Annotated` dependencies."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from service.api.context import ApiContext


async def get_context(request: Request) -> ApiContext:
    """Async on purpose: FastAPI runs a plain `def` dependency in its thread pool per request."""
    return cast(ApiContext, request.app.state.context)


Context = Annotated[ApiContext, Depends(get_context)]
