"""Experiments over HTTP: define them (admin), ask for decisions, read what they show."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from models.access import Scope
from models.events import Channel, Identifier
from models.experiment_stats import report
from models.experiments import HOLDOUT, HOLDOUT_VARIANTS, ExperimentSpec
from models.recommend import ACTION_TYPES
from models.triggers import TRIGGER_TYPES
from service.api.auth import GUARDED, requires
from service.api.deps import Context
from service.api.recommendation_schemas import ExperimentDecisionPublic
from service.api.schemas import FieldProblem, Problem
from service.exposures import Exposed

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/v1",
    tags=["experiments"],
    responses=GUARDED | {422: {"model": FieldProblem, "description": "Field-level errors"}},
)

Name = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No experiment with this name"}
}
PEEKING = (
    "ci95 is a fixed-horizon interval: it is valid only if you decided the sample size in "
    "advance and look once. Deciding by looking repeatedly inflates false positives; use "
    "anytime_ci95 and `winner`, which stay valid however often you look."
)


class ExperimentPublic(BaseModel):
    name: str
    decision: str
    variants: list[dict[str, Any]]
    success: list[str]
    window_s: int
    policy: str
    contextual: bool
    active: bool
    created_at: int = Field(description="epoch ms")
    updated_at: int = Field(description="epoch ms")


class ExperimentsPublic(BaseModel):
    experiments: list[ExperimentPublic]
    holdout: float = Field(description="share of customers in the personalization holdout")


class ResultsPublic(BaseModel):
    name: str
    definition: dict[str, Any] | None
    snapshot: str = Field(description="the model snapshot the counts come from")
    exposures: int
    traffic_share: dict[str, float | None]
    variants: list[dict[str, Any]]
    winner: str | None = Field(description="stopping rule: anytime-valid, safe to check often")
    bandit: bool
    by_context: dict[str, list[dict[str, Any]]]
    warning: str


class DecisionAsk(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: Identifier
    channel: Channel = Channel.web
    at: AwareDatetime | None = Field(
        default=None, description="event time of the decision (default: now)"
    )


class DecisionPublic(ExperimentDecisionPublic):
    customer_id: str
    new: bool = Field(description="first exposure: recorded now")


@router.get(
    "/experiments", summary="Every experiment defined", dependencies=[requires(Scope.ADMIN)]
)
async def list_experiments(ctx: Context) -> ExperimentsPublic:
    defined = await ctx.exposures.book.store.list()
    return ExperimentsPublic(
        experiments=[ExperimentPublic(**d.public()) for d in defined],
        holdout=ctx.exposures.holdout,
    )


@router.put(
    "/experiments/{name}",
    summary="Define or replace an experiment (live everywhere within the refresh interval)",
    dependencies=[requires(Scope.ADMIN)],
    responses={
        201: {"model": ExperimentPublic, "description": "Created"},
        409: {"model": Problem, "description": "It exists, or ran, with other variants"},
    },
)
async def put_experiment(
    name: Name, spec: ExperimentSpec, response: Response, ctx: Context
) -> ExperimentPublic:
    if name == HOLDOUT:
        raise RequestValidationError(
            [{"loc": ("path", "name"), "msg": "'holdout' is built in", "type": "reserved"}]
        )
    kind, key = spec.point
    known = {"recommendation": ACTION_TYPES, "webhook": TRIGGER_TYPES}.get(kind)
    if known is not None and key not in known:
        msg = f"{kind} decisions are made at one of {sorted(known)}, not {key!r}"
        raise RequestValidationError([{"loc": ("body", "decision"), "msg": msg, "type": "unknown"}])
    old = await ctx.exposures.book.store.get(name)
    if old is not None and old.spec.variant_names != spec.variant_names:
        raise HTTPException(409, f"experiment {name!r} exists with other variants; use a new name")
    await ctx.scorer.refresh()
    used = set(ctx.scorer.training.experiments.tally(name)) - set(spec.variant_names)
    if used:  # customers keep the variant they were exposed to: a name is never reused
        msg = f"experiment {name!r} ran before with variants {sorted(used)}; use a new name"
        raise HTTPException(409, msg)
    defined = await ctx.exposures.book.store.put(name, spec, now_ms=int(time.time() * 1000))
    await ctx.exposures.book.refresh(force=True)
    response.status_code = 200 if old is not None else 201
    logger.info("experiment %s %s", name, "replaced" if old is not None else "created")
    return ExperimentPublic(**defined.public())


@router.delete(
    "/experiments/{name}",
    status_code=204,
    summary="Delete a definition; its results stay in the snapshot",
    dependencies=[requires(Scope.ADMIN)],
    responses=_NOT_FOUND,
)
async def delete_experiment(name: Name, ctx: Context) -> Response:
    if not await ctx.exposures.book.store.delete(name):
        raise HTTPException(404, f"no experiment {name!r}")
    await ctx.exposures.book.refresh(force=True)
    return Response(status_code=204)


@router.get(
    "/experiments/{name}",
    summary="Exposures, conversions and rates per variant, with intervals and a stopping rule",
    dependencies=[requires(Scope.ADMIN)],
    responses=_NOT_FOUND,
)
async def get_results(name: Name, ctx: Context) -> ResultsPublic:
    await ctx.scorer.refresh()
    ledger = ctx.scorer.training.experiments
    if name == HOLDOUT:
        definition, variants, is_bandit = None, [HOLDOUT, HOLDOUT_VARIANTS[0]], False
    else:
        defined = await ctx.exposures.book.store.get(name)
        if defined is None and name not in ledger.arms:
            raise HTTPException(404, f"no experiment {name!r}")
        spec = defined.spec if defined is not None else None
        definition = defined.public() if defined is not None else None
        variants = spec.variant_names if spec is not None else sorted(ledger.tally(name))
        is_bandit = spec is not None and spec.policy != "split"
    known = name == HOLDOUT or definition is not None  # else no control: results only
    body = report(variants, ledger.tally(name), bandit_policy=is_bandit, control=known)
    contexts = {
        context: report(variants, arms, bandit_policy=is_bandit, control=known)["variants"]
        for context, arms in sorted(ledger.by_context.get(name, {}).items())
    }
    return ResultsPublic(
        name=name,
        definition=definition,
        snapshot=ctx.scorer.version,
        by_context=contexts,
        warning=PEEKING,
        **body,
    )


@router.post(
    "/experiments/{name}/decisions",
    summary="The customer's variant in an experiment (a custom decision); the first is recorded",
    dependencies=[requires(Scope.READ)],
    responses=_NOT_FOUND
    | {
        409: {"model": Problem, "description": "The experiment is paused (active: false)"},
        503: {"model": Problem, "description": "The exposure could not be recorded"},
    },
)
async def decide(name: Name, ask: DecisionAsk, ctx: Context) -> DecisionPublic:
    exposures = ctx.exposures
    await exposures.book.refresh()
    await ctx.scorer.refresh()  # the bandits learn with each snapshot
    spec = exposures.book.spec(name)
    if spec is None:
        raise HTTPException(404, f"no experiment {name!r}")
    if not spec.active:
        raise HTTPException(409, f"experiment {name!r} is paused")
    state = await ctx.store.get(ask.customer_id)
    if not exposures.eligible(ask.customer_id, state):
        raise HTTPException(409, "the customer gets no experiments (holdout or opted out)")
    decision = exposures.decide_in(name, ask.customer_id, state)
    assert decision is not None  # its definition was found above
    if decision.new:
        at = ask.at or datetime.now(UTC)
        exposed = Exposed(ask.customer_id, decision, int(at.timestamp() * 1000), ask.channel)
        if await exposures.record([exposed]):
            raise HTTPException(
                503, "the exposure could not be recorded; try again", {"Retry-After": "1"}
            )
    return DecisionPublic(customer_id=ask.customer_id, new=decision.new, **decision.public())
