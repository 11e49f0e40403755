"""Model scores for a customer now, and what the models are."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path

from models.access import Scope
from models.predictions import explain, point
from service.api.auth import GUARDED, requires
from service.api.deps import Context
from service.api.schemas import (
    AbandonmentPublic,
    DriverPublic,
    ModelPublic,
    ModelsPublic,
    NextStagePublic,
    PredictionsPublic,
    Problem,
)

router = APIRouter(prefix="/v1", tags=["models"])

CustomerId = Annotated[str, Path(min_length=1, max_length=128)]


@router.get(
    "/customers/{customer_id:path}/predictions",
    summary="Abandonment risk and next-stage probabilities, recomputed now",
    dependencies=[requires(Scope.READ)],
    responses=GUARDED | {404: {"model": Problem, "description": "No event seen for this customer"}},
)
async def get_predictions(customer_id: CustomerId, ctx: Context) -> PredictionsPublic:
    """Scores at the customer's event-time "now": the newest event time on their partition.

    Time-dependent features (idle time, cart age) therefore move while the customer is away,
    and a replay of old events is scored on its own clock, not today's.
    """
    state = await ctx.store.get(customer_id)
    if state is None:
        raise HTTPException(404, f"no journey for customer {customer_id!r}")
    if not state.personalization or ctx.exposures.held_out(customer_id):  # opted out, holdout
        return PredictionsPublic(
            customer_id=customer_id,
            as_of=datetime.fromtimestamp(state.last_event_at / 1000, UTC),
            stage=state.stage,
            personalized=False,
            abandonment=None,
            next_stage=None,
        )
    await ctx.scorer.refresh()
    watermarks = await ctx.store.watermarks(int(p) for p in state.offsets)
    now_ms = max([state.last_event_at, *watermarks.values()])
    predictor = ctx.scorer.predictor
    at_now = point(state, now_ms)
    scores = predictor.score_many([at_now])[0]
    drivers = explain(predictor.training, at_now)
    return PredictionsPublic(
        customer_id=customer_id,
        as_of=datetime.fromtimestamp(now_ms / 1000, UTC),
        stage=state.stage,
        abandonment=_abandonment(scores["abandonment"], drivers.get("abandonment", [])),
        next_stage=_next_stage(scores["next_stage"], drivers["next_stage"]),
    )


@router.get(
    "/models",
    summary="Each model's version, samples learned and progressive metrics",
    dependencies=[requires(Scope.ADMIN)],
    responses=GUARDED,
)
async def list_models(ctx: Context) -> ModelsPublic:
    snapshot = await ctx.snapshots.fetch(blob=False)
    await ctx.scorer.refresh()
    served = ctx.scorer.registry.current
    summary: dict[str, Any] = (
        snapshot.meta.get("models", {}) if snapshot else ctx.scorer.training.summary()
    )
    published = snapshot.meta.get("published_at") if snapshot else None
    return ModelsPublic(
        snapshot_version=snapshot.version if snapshot else None,
        published_at=datetime.fromtimestamp(published, UTC) if published else None,
        served_version=served.version if served else None,
        models=[ModelPublic(name=name, **info) for name, info in summary.items()],
    )


def _drivers(terms: list[tuple[str, float]]) -> list[DriverPublic]:
    return [DriverPublic(feature=name, contribution=round(value, 6)) for name, value in terms]


def _abandonment(
    score: dict[str, Any] | None, drivers: list[tuple[str, float]]
) -> AbandonmentPublic | None:
    if score is None:
        return None
    return AbandonmentPublic(**score, drivers=_drivers(drivers))


def _next_stage(score: dict[str, Any], drivers: list[tuple[str, float]]) -> NextStagePublic:
    probabilities: dict[str, float] = score["probabilities"]
    best = max(probabilities, key=probabilities.__getitem__) if probabilities else None
    return NextStagePublic(**score, most_likely=best, drivers=_drivers(drivers))
