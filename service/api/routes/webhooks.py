"""Webhook subscriptions: which endpoints receive which triggers, managed over the API.

Every URL is checked (`service.targets`) before it is stored, so a subscription can never
point Parcours at its own network; the dispatcher checks again before each delivery.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Iterable
from typing import Annotated, Any, NoReturn
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Path, Response
from fastapi.exceptions import RequestValidationError

from models.access import Scope
from models.webhooks import Filter, Subscription
from service.api.auth import GUARDED, requires
from service.api.context import ApiContext
from service.api.deps import Context
from service.api.schemas import FieldProblem, Problem
from service.api.webhook_schemas import (
    WebhookCreate,
    WebhookPublic,
    WebhookSecretPublic,
    WebhooksPublic,
    WebhookUpdate,
)
from service.targets import TargetRefused, check_target

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/v1", tags=["webhooks"], dependencies=[requires(Scope.ADMIN)], responses=GUARDED
)

WebhookId = Annotated[str, Path(min_length=1, max_length=64)]
_Error = tuple[tuple[str | int, ...], str, str]
"""A field-level error: where, what, and a stable type."""
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No subscription with this id"}
}
_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": FieldProblem, "description": "Field-level errors, e.g. a refused URL"}
}


@router.post(
    "/webhooks",
    status_code=201,
    summary="Subscribe an endpoint to triggers",
    responses=_INVALID,
)
async def create_webhook(
    body: WebhookCreate, response: Response, ctx: Context
) -> WebhookSecretPublic:
    """The answer holds the generated secret when none was given: the only time it is shown."""
    stages = body.filter.stages if body.filter else None
    await _validate(ctx, body.url, stages)
    generated = body.secret is None
    sub = Subscription(
        id=f"wh_{secrets.token_hex(12)}",
        url=body.url,
        triggers=frozenset(body.triggers),
        secret=body.secret.get_secret_value() if body.secret else secrets.token_urlsafe(32),
        enabled=body.enabled,
        filter=body.filter.to_filter() if body.filter else Filter(),
        created_at=int(time.time() * 1000),
        description=body.description,
    )
    await ctx.subscriptions.create(sub)
    logger.info("webhook %s created for %s", sub.id, urlsplit(sub.url).hostname)
    response.headers["Location"] = f"/v1/webhooks/{sub.id}"
    return WebhookSecretPublic.issued(sub, generated=generated)


@router.get("/webhooks", summary="Every subscription, oldest first")
async def list_webhooks(ctx: Context) -> WebhooksPublic:
    subs = await ctx.subscriptions.list()
    return WebhooksPublic(webhooks=[WebhookPublic.from_subscription(s) for s in subs])


@router.get("/webhooks/{webhook_id}", summary="One subscription", responses=_NOT_FOUND)
async def get_webhook(webhook_id: WebhookId, ctx: Context) -> WebhookPublic:
    return WebhookPublic.from_subscription(await _existing(ctx, webhook_id))


@router.patch(
    "/webhooks/{webhook_id}",
    summary="Change some fields of a subscription, or rotate its secret",
    responses=_NOT_FOUND | _INVALID,
)
async def update_webhook(
    webhook_id: WebhookId, body: WebhookUpdate, ctx: Context
) -> WebhookSecretPublic:
    """Fields left out keep their value; the answer holds the secret only if it was generated."""
    if body.rotate_secret and "secret" in body.model_fields_set:
        loc = ("body", "rotate_secret")
        _invalid([(loc, "give a secret or rotate_secret, not both", "conflicting_fields")])
    current = await _existing(ctx, webhook_id)
    changes = body.changes()
    await _validate(ctx, changes.get("url"), body.filter.stages if body.filter else None)
    if body.rotate_secret:
        changes["secret"] = secrets.token_urlsafe(32)
    sub = dataclasses.replace(current, **changes)
    if changes:
        if not await ctx.subscriptions.update(sub):
            raise HTTPException(404, f"no webhook subscription {webhook_id!r}")
        logger.info("webhook %s changed: %s", sub.id, ", ".join(sorted(changes)))
    return WebhookSecretPublic.issued(sub, generated=body.rotate_secret)


@router.delete(
    "/webhooks/{webhook_id}",
    status_code=204,
    summary="Unsubscribe; deliveries already under way may still arrive",
    responses=_NOT_FOUND,
)
async def delete_webhook(webhook_id: WebhookId, ctx: Context) -> Response:
    if not await ctx.subscriptions.delete(webhook_id):
        raise HTTPException(404, f"no webhook subscription {webhook_id!r}")
    logger.info("webhook %s deleted", webhook_id)
    return Response(status_code=204)


async def _existing(ctx: ApiContext, webhook_id: str) -> Subscription:
    sub = await ctx.subscriptions.get(webhook_id)
    if sub is None:
        raise HTTPException(404, f"no webhook subscription {webhook_id!r}")
    return sub


async def _validate(ctx: ApiContext, url: str | None, stages: Iterable[str] | None) -> None:
    """Stages of the active journey map and a target Parcours may call, or one 422 for all."""
    errors: list[_Error] = []
    known = ctx.journey_map.stages
    for i, stage in enumerate(stages or ()):
        if stage not in known:
            loc = ("body", "filter", "stages", i)
            msg = f"unknown stage {stage!r}; the journey map's stages are {list(known)}"
            errors.append((loc, msg, "unknown_stage"))
    if url is not None:
        settings = ctx.settings.webhooks
        try:
            await check_target(
                url,
                allow_http=settings.allow_http,
                allow_private=settings.allow_private_targets,
                timeout_s=settings.resolve_timeout_s,
            )
        except TargetRefused as exc:
            errors.append((("body", "url"), exc.reason, "target_refused"))
    if errors:
        _invalid(errors)


def _invalid(errors: list[_Error]) -> NoReturn:
    raise RequestValidationError(
        [{"loc": loc, "msg": msg, "type": kind} for loc, msg, kind in errors]
    )
