"""What a webhook receiver gets: the trigger record, one payload shape per trigger type.

The body of every delivery is the trigger itself (`models.triggers.Trigger.to_json`); the
payloads are built by `models.trigger_rules`. Served as JSON Schema at
`GET /v1/schema/triggers` so that marketing automation can validate what it receives.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from service.api.recommendation_schemas import ExperimentDecisionPublic


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str = Field(description="the customer's stage when the trigger fired")
    experiments: list[ExperimentDecisionPublic] | None = Field(
        default=None, description="the customer's variant in each experiment deciding here"
    )


class CartLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_id: str
    quantity: int
    price: float
    category: str | None


class CartSnapshot(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[CartLine] = Field(description="newest line first")
    value: float
    units: int


class Cause(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str
    type: str
    channel: str


class StageChanged(_Payload):
    from_: str = Field(alias="from")
    to: str
    event: Cause = Field(description="the event that moved the customer")


class Converted(_Payload):
    order_id: str | None
    cart: CartSnapshot = Field(description="the cart before the purchase")
    cart_open: bool = Field(description="items are still in the cart after it")


class Abandoned(_Payload):
    cart: CartSnapshot
    risk: float | None = Field(description="the last abandonment risk scored (None: unscored)")
    deadline_at: int = Field(description="epoch ms of event time: when the cart was abandoned")
    last_channel: str | None


class AtRisk(_Payload):
    cart: CartSnapshot
    risk: float
    threshold: float


class _Trigger(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="deterministic: deduplicate deliveries by it")
    customer_id: str
    journey_map: str
    at: int = Field(description="epoch ms of event time")


class StageChangedTrigger(_Trigger):
    type: Literal["journey.stage_changed"]
    payload: StageChanged


class ConvertedTrigger(_Trigger):
    type: Literal["customer.converted"]
    payload: Converted


class AbandonedTrigger(_Trigger):
    type: Literal["cart.abandoned"]
    payload: Abandoned


class AtRiskTrigger(_Trigger):
    type: Literal["cart.at_risk"]
    payload: AtRisk


AnyTrigger = Annotated[
    StageChangedTrigger | ConvertedTrigger | AbandonedTrigger | AtRiskTrigger,
    Field(discriminator="type"),
]
ANY_TRIGGER: TypeAdapter[Any] = TypeAdapter(AnyTrigger)


def trigger_json_schema() -> dict[str, Any]:
    """One schema for any delivery body: a trigger of one of the four types."""
    schema: dict[str, Any] = ANY_TRIGGER.json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Parcours webhook delivery (a trigger)"
    return schema
