"""What to show a customer now: one customer per page view, or a batch for email campaigns."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from models.access import Scope
from models.events import Identifier
from models.recommend import Context as PageContext
from service.api import recommendation_query as query
from service.api.auth import GUARDED, UNROUTABLE, admit, requires
from service.api.context import ApiContext
from service.api.deps import Context
from service.api.recommendation_schemas import BatchRecommendationsPublic, RecommendationsPublic
from service.api.recommender import Ask
from service.api.responses import OrjsonResponse
from service.api.schemas import FieldProblem

router = APIRouter(
    prefix="/v1",
    tags=["recommendations"],
    responses=GUARDED
    | UNROUTABLE
    | {422: {"model": FieldProblem, "description": "Field-level errors"}},
)


class BatchRequest(BaseModel):
    """Recommendations for many customers in one call (an email campaign's audience)."""

    model_config = ConfigDict(extra="forbid")

    customer_ids: list[Identifier] = Field(min_length=1, max_length=1000)
    context: PageContext = "email"
    limit: int | None = Field(default=None, ge=1, le=query.MAX_LIMIT)
    category: str | None = Field(default=None, min_length=1, max_length=256)


@router.get(
    "/customers/{customer_id:path}/recommendations",
    summary="Ranked actions to show this customer now",
    response_model=RecommendationsPublic,
    openapi_extra={"parameters": query.OPENAPI_PARAMETERS},
)
async def get_recommendations(request: Request) -> Any:
    """Cart reminder, accessories, next best action and trending, ordered for `context`.

    An unknown customer gets the cold-start answer (`known: false`), not a 404.
    """
    await admit(request, Scope.READ)  # called here, not as a dependency: the storefront's hot path
    asked = query.parse(request.path_params["customer_id"], request.query_params)
    ctx: ApiContext = request.app.state.context
    limit = _limit(ctx, asked.limit, ("query", "limit"))
    ask = Ask(asked.customer_id, asked.context, limit, asked.product_id, asked.category)
    [body] = await ctx.recommender.answer([ask], request.state.request_id)
    return OrjsonResponse(body)


@router.post(
    "/recommendations:batch",
    summary="Recommendations for up to `PARCOURS_RECOMMEND_MAX_BATCH` customers at once",
    response_model=BatchRecommendationsPublic,
    dependencies=[requires(Scope.READ)],
)
async def batch_recommendations(batch: BatchRequest, request: Request, ctx: Context) -> Any:
    """The single-customer answer for each id, in request order (ids: `<request id>.<index>`)."""
    most = ctx.settings.recommend.max_batch
    if len(batch.customer_ids) > most:
        _invalid(("body", "customer_ids"), f"at most {most} customers per request", "too_long")
    limit = _limit(ctx, batch.limit, ("body", "limit"))
    asks = [Ask(c, batch.context, limit, None, batch.category) for c in batch.customer_ids]
    rid = request.state.request_id
    results = await ctx.recommender.answer(asks, rid)
    return OrjsonResponse({"request_id": rid, "results": results})


def _limit(ctx: ApiContext, limit: int | None, loc: tuple[str, ...]) -> int:
    settings = ctx.settings.recommend
    if limit is None:
        return min(settings.default_limit, settings.max_limit)
    if limit > settings.max_limit:
        _invalid(loc, f"at most {settings.max_limit} actions per customer", "less_than_equal")
    return limit


def _invalid(loc: tuple[str, ...], msg: str, kind: str) -> None:
    raise RequestValidationError([{"loc": loc, "msg": msg, "type": kind}])
