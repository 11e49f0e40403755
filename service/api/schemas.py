"""Public response shapes. Times are RFC 3339 in UTC; internal bookkeeping is not exposed."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field

from models.state import JourneyState


def _time(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms is not None else None


_RFC3339_DATE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]")


def _written_as_time(value: object) -> object:
    """Only an RFC 3339 text reaches pydantic's parser, which would also read a bare number
    as Unix seconds (`?to=6`), a value the published schema (a date-time string) rules out."""
    if isinstance(value, str) and not _RFC3339_DATE.match(value):
        raise ValueError("expected an RFC 3339 time with an offset, e.g. 2026-11-23T10:00:00Z")
    return value


Rfc3339Time = Annotated[AwareDatetime, BeforeValidator(_written_as_time)]
"""A time query parameter: RFC 3339 text with an offset, as the schema says; nothing else."""


class EventsAccepted(BaseModel):
    accepted: list[str] = Field(description="event_ids the broker acknowledged")
    count: int


class EventsUnavailable(BaseModel):
    detail: str
    accepted: list[str] = Field(description="acknowledged despite the failure")
    failed: list[str] = Field(description="not stored; resend them (resending all is safe)")


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class FieldProblem(BaseModel):
    """A refusal naming each field at fault."""

    detail: list[FieldError]


class ValidationProblem(FieldProblem):
    """An event refusal: the fields, and one stable reason for the dead-letter counters."""

    reason: str


class Problem(BaseModel):
    detail: str


class StageVisitPublic(BaseModel):
    stage: str
    entered_at: datetime
    event_type: str


class CartItemPublic(BaseModel):
    product_id: str
    quantity: int
    price: float
    category: str | None
    added_at: datetime


class CartPublic(BaseModel):
    open: bool
    items: list[CartItemPublic]
    units: int
    value: float
    opened_at: datetime | None
    updated_at: datetime | None


class TouchpointPublic(BaseModel):
    type: str
    channel: str
    at: datetime
    product_id: str | None
    page: str | None


class ScorePointPublic(BaseModel):
    at: datetime = Field(description="event time of the newest event scored")
    stage: str = Field(description="the customer's stage then")
    next_stage: str = Field(description="the most likely next stage then")
    probability: float = Field(description="its probability")
    risk: float | None = Field(description="abandonment risk then; null without an open cart")


class RecentProductPublic(BaseModel):
    product_id: str
    at: datetime


class PurchasesPublic(BaseModel):
    count: int = Field(description="orders: distinct order_id, or one per session without one")
    items: int
    total_spend: float
    last_at: datetime | None
    recent_products: list[RecentProductPublic]


class SessionPublic(BaseModel):
    id: str | None
    count: int
    started_at: datetime | None
    events: int = Field(description="events in the current session (session depth)")


class AssignmentPublic(BaseModel):
    variant: str
    exposed_at: datetime
    window_ends_at: datetime
    context: str = Field(description="the bandit context it was decided in ('all' if none)")
    status: str = Field(description="open, converted or missed")


class JourneyPublic(BaseModel):
    """Where a customer is in their journey right now, and what brought them there."""

    customer_id: str
    journey_map: str
    stage: str
    stage_entered_at: datetime
    stage_history: list[StageVisitPublic]
    stage_first_entered: dict[str, datetime]
    first_event_at: datetime
    last_event_at: datetime
    events_applied: int
    counts_by_type: dict[str, int]
    counts_by_channel: dict[str, int]
    category_views: dict[str, int]
    cart: CartPublic
    touchpoints: list[TouchpointPublic]
    purchases: PurchasesPublic
    session: SessionPublic
    dwell_ms_total: int
    scores: ScoresPublic | None = Field(
        description="as of the newest event; GET .../predictions recomputes them for now"
    )
    score_history: list[ScorePointPublic] = Field(
        description="the stored scores over time, oldest first: each point differs from the "
        "one before in stage, most likely next stage, open cart, or risk by 0.05 or more"
    )
    personalization: bool = Field(
        description="the customer's consent (consent_updated); false: no scores, personal "
        "recommendations or triggers"
    )
    consent_at: datetime | None = Field(description="when the newest consent event happened")
    experiments: dict[str, AssignmentPublic] = Field(
        default_factory=dict, description="the customer's variant in each experiment they saw"
    )

    @classmethod
    def from_state(cls, s: JourneyState) -> JourneyPublic:
        cart, purchases, session = s.cart, s.purchases, s.session
        return cls.model_validate(
            {
                "customer_id": s.customer_id,
                "journey_map": s.journey_map,
                "stage": s.stage,
                "stage_entered_at": _time(s.stage_entered_at),
                "stage_history": [
                    {
                        "stage": v.stage,
                        "entered_at": _time(v.entered_at),
                        "event_type": v.event_type,
                    }
                    for v in s.stage_history
                ],
                "stage_first_entered": {k: _time(v) for k, v in s.stage_first_entered.items()},
                "personalization": s.personalization,
                "consent_at": _time(s.consent_at) if s.consent_at else None,
                "experiments": {
                    name: {
                        "variant": a.variant,
                        "exposed_at": _time(a.at),
                        "window_ends_at": _time(a.until),
                        "context": a.context,
                        "status": a.status,
                    }
                    for name, a in s.experiments.items()
                },
                "first_event_at": _time(s.first_event_at),
                "last_event_at": _time(s.last_event_at),
                "events_applied": s.events_applied,
                "counts_by_type": s.counts_by_type,
                "counts_by_channel": s.counts_by_channel,
                "category_views": s.category_views,
                "cart": {
                    "open": bool(cart.items),
                    "items": [
                        {**item._asdict(), "added_at": _time(item.added_at)}
                        for item in cart.items.values()
                    ],
                    "units": cart.units,
                    "value": cart.value,
                    "opened_at": _time(cart.opened_at),
                    "updated_at": _time(cart.updated_at),
                },
                "touchpoints": [{**t._asdict(), "at": _time(t.at)} for t in s.touchpoints],
                "purchases": {
                    "count": purchases.count,
                    "items": purchases.items,
                    "total_spend": purchases.total_spend,
                    "last_at": _time(purchases.last_at),
                    "recent_products": [
                        {"product_id": p.product_id, "at": _time(p.at)}
                        for p in purchases.recent_products
                    ],
                },
                "session": {
                    "id": session.id,
                    "count": session.count,
                    "started_at": _time(session.started_at),
                    "events": session.events,
                },
                "dwell_ms_total": s.dwell_ms_total,
                "scores": _scores(s.predictions),
                "score_history": [{**p._asdict(), "at": _time(p.at)} for p in s.score_history],
            }
        )


def _scores(predictions: dict[str, Any] | None) -> dict[str, Any] | None:
    if predictions is None:
        return None
    return {**predictions, "at": _time(predictions["at"])}


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str] = Field(description="per dependency: ok, or what failed")


class DriverPublic(BaseModel):
    feature: str
    contribution: float = Field(description="weight x standardized value; > 0 raises the score")


class RiskPublic(BaseModel):
    risk: float = Field(ge=0, le=1, description="probability the open cart is abandoned")
    model_version: str = Field(description='"fallback" while the model is still cold')


class StageOddsPublic(BaseModel):
    probabilities: dict[str, float] = Field(
        description='next stage, the current stage (stays) or "exit" (leaves), within the horizon'
    )
    model_version: str = Field(description='"fallback" while the model is still cold')


class AbandonmentPublic(RiskPublic):
    drivers: list[DriverPublic]


class NextStagePublic(StageOddsPublic):
    most_likely: str | None
    drivers: list[DriverPublic]


class ScoresPublic(BaseModel):
    """Scores the consumer attached when it applied the customer's newest events."""

    at: datetime
    abandonment: RiskPublic | None = Field(description="null while the cart is empty")
    next_stage: StageOddsPublic


class PredictionsPublic(BaseModel):
    customer_id: str
    as_of: datetime = Field(description="event time the features were computed at")
    stage: str
    personalized: bool = Field(
        default=True,
        description="False: the customer opted out (consent_updated) or is in the "
        "personalization holdout (PARCOURS_EXPERIMENTS_HOLDOUT); no scores",
    )
    abandonment: AbandonmentPublic | None = Field(
        description="null while the cart is empty, or when not personalized"
    )
    next_stage: NextStagePublic | None = Field(description="null when not personalized")


class ModelPublic(BaseModel):
    name: Literal["abandonment", "next_stage"]
    version: str = Field(description='served version, or "fallback" below min_samples')
    learner: str
    samples: int = Field(description="samples learned, each scored before it was learned")
    min_samples: int
    metrics: dict[str, float] = Field(description="progressive-validation metrics")
    rolling_metrics: dict[str, float] = Field(
        default_factory=dict,
        description="the same metrics over the model's last PARCOURS_MODELS_QUALITY_WINDOW "
        "samples: its quality now",
    )
    rolling_samples: int = Field(default=0, description="samples `rolling_metrics` cover")


class ModelsPublic(BaseModel):
    snapshot_version: int | None = Field(description="null until the trainer publishes")
    published_at: datetime | None
    served_version: int | None = Field(description="the snapshot this API process serves")
    models: list[ModelPublic]
