"""Event intake: validate, produce to Kafka keyed by customer, answer once the broker has it."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response

from models.access import Scope
from models.events import MAX_BATCH
from service.api.auth import GUARDED, requires
from service.api.deps import Context
from service.api.responses import problem
from service.api.schemas import EventsAccepted, EventsUnavailable, Problem, ValidationProblem

router = APIRouter(
    prefix="/v1", tags=["events"], dependencies=[requires(Scope.INGEST)], responses=GUARDED
)

RETRY_AFTER_S = 2

_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/Event"},
                        {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Event"},
                            "minItems": 1,
                            "maxItems": MAX_BATCH,
                        },
                    ]
                }
            }
        },
    }
}


@router.post(
    "/events",
    status_code=202,
    response_model=EventsAccepted,
    summary="Send one event or a batch of up to 1,000",
    responses={
        413: {"model": Problem, "description": "Body over the size limit"},
        415: {"model": Problem, "description": "Body is not JSON"},
        422: {"model": ValidationProblem, "description": "Field-level errors; nothing was sent"},
        503: {"model": EventsUnavailable, "description": "Kafka did not acknowledge; retry"},
    },
    openapi_extra=_BODY_DOC,
)
async def post_events(request: Request, ctx: Context) -> EventsAccepted | Response:
    """Accepted ids are returned only after Kafka acknowledged them; resending is always safe."""
    content_type = request.headers.get("content-type", "application/json")
    if "json" not in content_type.lower():
        raise HTTPException(415, f"expected application/json, got {content_type}")
    body = await _read_body(request, ctx.settings.api.max_body_bytes)
    events = ctx.decoder.decode_batch(body, int(time.time() * 1000))
    published = await ctx.publisher.publish(events)
    ctx.metrics.events.labels("accepted").inc(len(published.accepted))
    if published.failed:
        ctx.metrics.events.labels("unavailable").inc(len(published.failed))
        return problem(
            503,
            "Kafka did not acknowledge every event; resend the failed ones",
            retry_after=RETRY_AFTER_S,
            accepted=published.accepted,
            failed=published.failed,
        )
    return EventsAccepted(accepted=published.accepted, count=len(published.accepted))


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"body exceeds the limit of {limit} bytes")
    return bytes(body)
