"""The practical limit for a customer read: one Redis GET of the journey key, its JSON returned.

FastAPI with the same Redis client, pool and settings as the Parcours API (`connect_redis`,
`PARCOURS_REDIS_*`), served by uvicorn with the same options by `bench.recommend_load`, so the
difference to the real endpoint is what the endpoint itself does.

    uvicorn bench.reference_api:create_app --factory
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, HTTPException, Request, Response

from service.settings import get_settings
from service.store import journey_store, redis_from_settings


def create_app() -> FastAPI:
    redis_settings = get_settings().redis

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.redis = redis_from_settings(redis_settings)
        app.state.journeys = journey_store(app.state.redis, redis_settings)
        try:
            yield
        finally:
            await app.state.redis.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/v1/customers/{customer_id}/{resource}")
    async def get_raw(customer_id: str, resource: str, request: Request) -> Response:
        raw = await request.app.state.redis.get(request.app.state.journeys.key(customer_id))
        if raw is None:
            raise HTTPException(404, f"no journey for customer {customer_id!r}")
        return Response(raw.partition(b" ")[2], media_type="application/json")

    return app
