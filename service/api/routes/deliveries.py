"""A webhook's deliveries: recent attempts, its breaker, and redelivery of a dead delivery."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from starlette.responses import Response

from models.access import Scope
from models.delivery import RetryPolicy
from service.api.auth import GUARDED, requires
from service.api.deps import Context
from service.api.responses import OrjsonResponse
from service.api.schemas import Problem
from service.redelivery import redeliver

router = APIRouter(
    prefix="/v1/webhooks",
    tags=["webhook deliveries"],
    dependencies=[requires(Scope.ADMIN)],
    responses=GUARDED,
)

SubscriptionId = Annotated[str, Path(min_length=1, max_length=128)]
DeliveryId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem}}


@router.get(
    "/{subscription_id}/deliveries",
    summary="Recent delivery attempts, newest first, and the breaker state",
    responses=NOT_FOUND,
)
async def list_deliveries(
    subscription_id: SubscriptionId,
    ctx: Context,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> Response:
    await _known(ctx, subscription_id)
    attempts = await ctx.deliveries.recent(subscription_id, limit)
    breaker = await ctx.deliveries.breaker(subscription_id)
    body = {"subscription_id": subscription_id, "breaker": breaker, "deliveries": attempts}
    return OrjsonResponse(body)


@router.get(
    "/{subscription_id}/health",
    summary="The subscription's circuit breaker: closed, half_open or open",
    responses=NOT_FOUND,
)
async def get_health(subscription_id: SubscriptionId, ctx: Context) -> Response:
    await _known(ctx, subscription_id)
    breaker = await ctx.deliveries.breaker(subscription_id)
    return OrjsonResponse({"subscription_id": subscription_id, **breaker})


@router.post(
    "/{subscription_id}/deliveries/{delivery_id}:redeliver",
    summary="Send a dead-lettered delivery again now",
    status_code=202,
    responses={**NOT_FOUND, 202: {"description": "status: delivered, queued or failed"}},
)
async def redeliver_delivery(
    subscription_id: SubscriptionId, delivery_id: DeliveryId, ctx: Context
) -> Response:
    webhooks = ctx.settings.webhooks
    policy = RetryPolicy(
        webhooks.max_attempts,
        webhooks.backoff_base_s,
        webhooks.backoff_max_s,
        webhooks.retry_after_max_s,
    )
    done = await redeliver(
        ctx.subscriptions, ctx.deliveries, ctx.webhook_sender, policy, subscription_id, delivery_id
    )
    if done is None:
        raise HTTPException(404, f"no dead-lettered delivery {delivery_id!r} for this webhook")
    body = {"subscription_id": subscription_id, "delivery_id": delivery_id, **done.public()}
    return OrjsonResponse(body, status_code=202)


async def _known(ctx: Context, subscription_id: str) -> None:
    if await ctx.subscriptions.get(subscription_id) is None:
        raise HTTPException(404, f"no webhook {subscription_id!r}")
