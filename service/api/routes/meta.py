"""Health probes, the event contract as JSON Schema, and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from models.access import Scope
from models.events import event_json_schema
from service.api.auth import requires_unless_open
from service.api.deps import Context
from service.api.exposition import expose
from service.api.recommendation_schemas import RecommendationsPublic
from service.api.responses import OrjsonResponse
from service.api.schemas import Health, Readiness
from service.api.trigger_schemas import trigger_json_schema
from service.errors import BusUnavailable
from service.store import REDIS_ERRORS

router = APIRouter()

PROBE_TIMEOUT_S = 1.0


@router.get("/healthz", tags=["meta"], summary="The process is up")
async def get_health() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    tags=["meta"],
    summary="Redis and Kafka are reachable",
    response_model=Readiness,
    responses={503: {"model": Readiness}},
)
async def get_readiness(ctx: Context) -> Readiness | Response:
    checks = {"redis": await _check_redis(ctx), "kafka": await _check_kafka(ctx)}
    for dependency, result in checks.items():
        ctx.metrics.dependency_up.labels(dependency).set(result == "ok")
    ready = all(result == "ok" for result in checks.values())
    body = Readiness(status="ready" if ready else "not_ready", checks=checks)
    if ready:
        return body
    return OrjsonResponse(body.model_dump(), status_code=503)


_SCHEMA: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/schema+json": {"schema": {"type": "object"}}}}
}


@router.get(
    "/v1/schema/event",
    tags=["events"],
    summary="The event contract as JSON Schema",
    response_class=OrjsonResponse,
    responses=_SCHEMA,
)
async def get_event_schema(ctx: Context) -> OrjsonResponse:
    schema: dict[str, Any] = event_json_schema(ctx.journey_map.event_types)
    return OrjsonResponse(schema, media_type="application/schema+json")


@router.get(
    "/v1/schema/recommendations",
    tags=["recommendations"],
    summary="The recommendations answer as JSON Schema",
    response_class=OrjsonResponse,
    responses=_SCHEMA,
)
async def get_recommendations_schema() -> OrjsonResponse:
    schema = RecommendationsPublic.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return OrjsonResponse(schema, media_type="application/schema+json")


@router.get(
    "/v1/schema/triggers",
    tags=["webhooks"],
    summary="The body of every webhook delivery (a trigger, by type) as JSON Schema",
    response_class=OrjsonResponse,
    responses=_SCHEMA,
)
async def get_triggers_schema() -> OrjsonResponse:
    return OrjsonResponse(trigger_json_schema(), media_type="application/schema+json")


@router.get("/metrics", include_in_schema=False, dependencies=[requires_unless_open(Scope.ADMIN)])
async def get_metrics(ctx: Context) -> Response:
    await ctx.journey_gauges.refresh()
    return Response(expose(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _check_redis(ctx: Context) -> str:
    try:
        await asyncio.wait_for(ctx.redis.ping(), PROBE_TIMEOUT_S)
    except (*REDIS_ERRORS, TimeoutError) as exc:
        return f"unreachable: {exc!r}"
    return "ok"


async def _check_kafka(ctx: Context) -> str:
    try:
        await ctx.producer.check(PROBE_TIMEOUT_S)
    except BusUnavailable as exc:
        return f"unreachable: {exc}"
    return "ok"
