"""Live journeys: where a customer is right now."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from models.access import Scope
from service.api.auth import GUARDED, requires
from service.api.deps import Context
from service.api.schemas import JourneyPublic, Problem

router = APIRouter(
    prefix="/v1", tags=["journeys"], dependencies=[requires(Scope.READ)], responses=GUARDED
)

CustomerId = Annotated[str, Path(min_length=1, max_length=128)]


@router.get(
    "/customers/{customer_id:path}/journey",
    summary="A customer's live journey state",
    responses={404: {"model": Problem, "description": "No event seen for this customer"}},
)
async def get_journey(customer_id: CustomerId, ctx: Context) -> JourneyPublic:
    state = await ctx.store.get(customer_id)
    if state is None:
        raise HTTPException(404, f"no journey for customer {customer_id!r}")
    return JourneyPublic.from_state(state)
