"""Response shapes of the analytics routes. Times are RFC 3339 in UTC, counts exact unless
a field says it is estimated."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class WindowPublic(BaseModel):
    """What was read: the buckets of one journey map and segment, and how settled they are."""

    model_config = ConfigDict(populate_by_name=True)

    journey_map: str
    segment: str
    bucket: Literal["hour", "day"]
    from_: datetime = Field(alias="from", description="start of the first bucket")
    to: datetime = Field(description="end of the last bucket (exclusive)")
    as_of: datetime | None = Field(description="newest event time counted; null before any")
    complete_until: datetime | None = Field(
        description="every exit and abandoned cart before this is decided; later buckets "
        "still gain them as the horizon passes"
    )


class DurationsPublic(BaseModel):
    moves: int = Field(description="moves counted (moves on, or exits)")
    median_s: float | None = Field(
        description="time spent in the stage before them; within 9.1% (or 1 s) of the exact"
    )
    p90_s: float | None = Field(description="90th percentile, same precision")


class FunnelStagePublic(BaseModel):
    stage: str
    entered: int = Field(description="moves into the stage")
    first_entries: int = Field(description="customers entering it for the first time ever")
    customers: int = Field(
        description="distinct customers entering it over the range, estimated (HyperLogLog, "
        "standard error 0.81%)"
    )
    departures: int = Field(description="moves out of the stage, exits included")
    moved_on: int = Field(description="departures to a later stage")
    to_next: int = Field(description="departures to the next stage of the map")
    moved_back: int = Field(description="departures to an earlier stage")
    exits: int = Field(description="departures by leaving: not seen again within the horizon")
    conversion: float | None = Field(description="moved_on / departures")
    to_next_rate: float | None = Field(description="to_next / departures")
    time_to_move_on: DurationsPublic
    time_before_exit: DurationsPublic = Field(
        description="time spent in the stage until the last event, by those who exited from it"
    )


class FunnelBucketPublic(BaseModel):
    start: datetime
    entered: dict[str, int] = Field(description="moves into each stage")
    customers: dict[str, int] | None = Field(
        description="distinct customers entering, estimated; only with `bucket_customers=true`"
    )


class FunnelPublic(BaseModel):
    window: WindowPublic
    stages: list[FunnelStagePublic] = Field(description="in the map's order")
    buckets: list[FunnelBucketPublic]


class TransitionPublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from", description='a stage, "new" (first event) or "exit"')
    to: str = Field(description='a stage, or "exit" (not seen again within the horizon)')
    count: int


class TransitionsBucketPublic(BaseModel):
    start: datetime
    transitions: list[TransitionPublic]


class TransitionsPublic(BaseModel):
    window: WindowPublic
    nodes: list[str] = Field(description='"new", the map\'s stages in order, then "exit"')
    transitions: list[TransitionPublic] = Field(description="most frequent first")
    buckets: list[TransitionsBucketPublic]


class TouchpointPublic(BaseModel):
    type: str
    channel: str
    target: str = Field(description='the product, else the page without its query; "*" pools')
    count: int = Field(description="outcomes it was among the last touchpoints of")
    progress: int = Field(description="moves on it was among the last touchpoints of")
    lift: float = Field(
        description="(count / outcomes) / ((progress + 1) / (moves on + 1)): above 1, it "
        "precedes this outcome more than it precedes progress"
    )


class OutcomeFrictionPublic(BaseModel):
    total: int
    touchpoints: list[TouchpointPublic] = Field(description="highest lift first")


class CartsPublic(BaseModel):
    at_checkout: int = Field(description="abandoned after a checkout_started since it opened")
    earlier: int
    value_at_checkout: float
    value_earlier: float


class FrictionBucketPublic(BaseModel):
    start: datetime
    exits: int
    abandoned_at_checkout: int
    abandoned_earlier: int


class FrictionPublic(BaseModel):
    window: WindowPublic
    progress: int = Field(description="moves on to a later stage: the lift's reference")
    exits: OutcomeFrictionPublic
    abandoned_carts: OutcomeFrictionPublic
    carts: CartsPublic
    buckets: list[FrictionBucketPublic]


class StageChannelsPublic(BaseModel):
    stage: str
    entered: int
    last_touch: dict[str, int] = Field(description="entries by the channel of the entering event")
    first_touch: dict[str, int] = Field(description="entries by the customer's first channel")


class ChannelsPublic(BaseModel):
    window: WindowPublic
    stages: list[StageChannelsPublic]


class LiveStagePublic(BaseModel):
    stage: str
    customers: int = Field(description="live journeys whose current stage this is")


class LivePublic(BaseModel):
    """The journey gauges now, over every live journey (the same numbers as on /metrics)."""

    journey_map: str
    stages: list[LiveStagePublic] = Field(description="in the map's order")
    open_carts: int = Field(description="live journeys whose cart holds items")
    cart_value: float = Field(description="their carts' value, in the shop's currency unit")
    value_at_risk: float = Field(
        description="each open cart's value times its last scored abandonment risk, summed"
    )


class ChangeSpanPublic(BaseModel):
    """The hours one kind of rate was judged on."""

    model_config = ConfigDict(populate_by_name=True)

    baseline_from: datetime = Field(description="start of the baseline hours")
    recent_from: datetime = Field(description="start of the recent hours (end of the baseline)")
    to: datetime = Field(description="end of the recent hours (exclusive)")


class ChangeRulePublic(BaseModel):
    min_count: int = Field(description="outcomes a touchpoint must precede, baseline and recent")
    min_increase: float = Field(description="least rise of the rate over its baseline")
    z: float = Field(description="least rise in standard errors of the baseline rate")


class ChangePublic(BaseModel):
    kind: Literal["exit", "loop"] = Field(
        description="exit: customers left after it; loop: they moved back to an earlier stage"
    )
    type: str
    channel: str
    target: str = Field(description="product id, or page without its query")
    started: datetime = Field(description="start of the first hour at the raised rate")
    baseline_rate: float = Field(description="share of exits (or loops) after it, baseline")
    rate: float = Field(description="the same share since `started`")
    customers: int = Field(description="exits (or loops) after it since `started`")
    seen: int = Field(description="exits (or loops) and moves on after it since `started`")
    z: float = Field(description="the rise in standard errors of the baseline rate")


class ChangesPublic(BaseModel):
    """Touchpoints whose exit or loop rate jumped against their own baseline, largest first.

    Exits are judged only on hours whose exits are all decided (the horizon has passed):
    with a 24 h horizon, a jump in exits shows a day after it started; loops show at once.
    """

    journey_map: str
    segment: str
    exits: ChangeSpanPublic
    loops: ChangeSpanPublic
    rule: ChangeRulePublic
    changes: list[ChangePublic]
