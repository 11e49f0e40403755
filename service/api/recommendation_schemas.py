"""The recommendations answer: its documented schema, and the fast renderer that produces it.

The route builds plain dicts (`render_answer`) and serializes them with orjson: validating a
pydantic model per response would cost more than the Redis read. The models below are the
contract (OpenAPI, `GET /v1/schema/recommendations`), and the tests validate real responses
against them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from models.recommend import Action, ActionType, Context, recommendation_id


class ItemPublic(BaseModel):
    product_id: str
    quantity: int | None = Field(default=None, description="cart lines only")
    price: float | None = Field(default=None, description="cart lines only: unit price")
    category: str | None = None


class CartReminderPublic(BaseModel):
    value: float = Field(description="the cart's value")
    risk: float | None = Field(description="abandonment risk now (None: not scored)")
    idle_seconds: float = Field(description="event time since the cart last changed")
    last_channel: str | None = Field(description="where the customer was last active")


class NextActionPublic(BaseModel):
    name: str = Field(description="the action the journey map declares")
    description: str
    params: dict[str, str | int | float | bool]
    stage: str
    predicted_next_stage: str | None = Field(description="None: predicted to stay in `stage`")
    leaving: bool = Field(description="the models predict the customer is about to leave")


class ExperimentDecisionPublic(BaseModel):
    name: str = Field(description="the experiment deciding this action")
    variant: str = Field(description="the customer's variant: the same on every request")
    params: dict[str, Any] = Field(description="what the variant says to do (its definition)")


class RecommendationPublic(BaseModel):
    id: str = Field(
        description="Report it back with a recommendation_view or recommendation_click event "
        "(properties.recommendation_id) to measure click-through."
    )
    type: ActionType
    score: float = Field(ge=0, le=1, description="within its type: higher is stronger")
    reason: str = Field(description="machine-readable cause, e.g. cart_at_risk")
    items: list[ItemPublic]
    seed: str | None = Field(default=None, description="accessory: the product it goes with")
    cart: CartReminderPublic | None = Field(default=None, description="cart reminders only")
    action: NextActionPublic | None = Field(default=None, description="next best action only")
    experiments: list[ExperimentDecisionPublic] | None = Field(
        default=None, description="present while an experiment decides this action type"
    )


class RecommendationsPublic(BaseModel):
    customer_id: str
    request_id: str = Field(description="also in the X-Request-ID header and in the logs")
    known: bool = Field(description="False: no journey yet, the answer is the cold start")
    personalized: bool = Field(
        description="False: unknown, opted out of personalization (consent_updated) or in the "
        "personalization holdout; the answer is then what any visitor on this page gets"
    )
    stage: str
    context: Context
    as_of: datetime = Field(description="event time the answer was computed at")
    model_version: str = Field(description="the served model snapshot, or 'untrained'")
    recommendations: list[RecommendationPublic]


class BatchRecommendationsPublic(BaseModel):
    request_id: str
    results: list[RecommendationsPublic] = Field(description="in the order of the request")


def render_action(action: Action, rec_id: str) -> dict[str, Any]:
    """One action as `RecommendationPublic` would serialize it."""
    out: dict[str, Any] = {
        "id": rec_id,
        "type": action.type,
        "score": action.score,
        "reason": action.reason,
        "items": [
            {"product_id": i.product_id, "quantity": i.quantity, "price": i.price,
             "category": i.category}
            for i in action.items
        ],
        "seed": None,
        "cart": None,
        "action": None,
    }  # fmt: skip
    details = action.details
    if action.type == "accessory":
        out["seed"] = details["seed"]
    elif action.type == "abandoned_cart_reminder":
        out["cart"] = {
            "value": details["cart_value"],
            "risk": details["risk"],
            "idle_seconds": details["idle_ms"] / 1000,
            "last_channel": details["last_channel"],
        }
    elif action.type == "next_best_action":
        out["action"] = {
            "name": details["action"],
            "description": details["description"],
            "params": details["params"],
            "stage": details["stage"],
            "predicted_next_stage": details["predicted_next_stage"],
            "leaving": details["leaving"],
        }
    return out


def render_answer(
    customer_id: str,
    request_id: str,
    *,
    known: bool,
    personalized: bool,
    stage: str,
    context: Context,
    as_of_ms: int,
    model_version: str,
    actions: Sequence[Action],
) -> dict[str, Any]:
    """The body of `RecommendationsPublic`, ids assigned in rank order."""
    return {
        "customer_id": customer_id,
        "request_id": request_id,
        "known": known,
        "personalized": personalized,
        "stage": stage,
        "context": context,
        "as_of": datetime.fromtimestamp(as_of_ms / 1000, UTC),
        "model_version": model_version,
        "recommendations": [
            render_action(a, recommendation_id(a.type, request_id, rank))
            for rank, a in enumerate(actions)
        ],
    }
