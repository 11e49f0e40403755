"""A customer's live journey state and its wire form.

Leaves (`CartItem`, `Touchpoint`, `StageVisit`, `RecentProduct`) are immutable named tuples,
stored as JSON arrays: copying a state for a pure fold step is a few shallow container copies,
and the wire form is compact and quick to (de)serialize. Times are epoch ms.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, TypeVar

import orjson

from models.experiments import Assignment

SCHEMA_VERSION: Final = 1


class CartItem(NamedTuple):
    product_id: str
    quantity: int
    price: float
    category: str | None
    added_at: int


class Touchpoint(NamedTuple):
    type: str
    channel: str
    at: int
    product_id: str | None = None
    page: str | None = None


class ScorePoint(NamedTuple):
    """The models' view of a journey at one of its events: the most likely next stage (and
    its probability) and, while a cart is open, the abandonment risk."""

    at: int
    stage: str
    next_stage: str
    probability: float
    risk: float | None


class StageVisit(NamedTuple):
    stage: str
    entered_at: int
    event_type: str


class RecentProduct(NamedTuple):
    product_id: str
    at: int


@dataclass(slots=True)
class Cart:
    """Open when it holds at least one item; `opened_at` marks when it last became non-empty."""

    items: dict[str, CartItem] = field(default_factory=dict)
    opened_at: int | None = None
    updated_at: int | None = None

    @property
    def units(self) -> int:
        return sum(item.quantity for item in self.items.values())

    @property
    def value(self) -> float:
        return round(sum(item.quantity * item.price for item in self.items.values()), 2)


@dataclass(slots=True)
class Purchases:
    count: int = 0
    items: int = 0
    total_spend: float = 0.0
    last_at: int | None = None
    order_keys: list[str] = field(default_factory=list)
    recent_products: list[RecentProduct] = field(default_factory=list)


@dataclass(slots=True)
class Session:
    id: str | None = None
    count: int = 0
    started_at: int | None = None
    events: int = 0


@dataclass(slots=True)
class JourneyState:
    """Everything Parcours keeps about one customer's journey.

    `seen` (fixed-width event-id digests, concatenated) and `offsets` (last applied offset per
    partition) make applying an event idempotent; they are bookkeeping, not public journey.
    `predictions` holds the model scores attached when the state was last written (the fold
    never reads them; see `models.predictions`), `score_history` the recent ones that differed
    from the one before (`models.predictions.remember`). `alerts` remembers which triggers were
    sent (`models.trigger_rules`: once per cart, frequency caps); bookkeeping too.
    `first_channel` is the channel of the customer's first event (None in journeys written
    before it was kept). `personalization` is the customer's consent as of `consent_at` (event
    time; the newest consent event wins): without it they get no predictions, personal
    recommendations or triggers. `experiments` holds the customer's variant in each experiment
    they were exposed to and the state of its outcome (`models.experiments`).
    """

    customer_id: str
    journey_map: str
    stage: str
    stage_entered_at: int
    first_event_at: int
    last_event_at: int
    events_applied: int = 0
    stage_history: list[StageVisit] = field(default_factory=list)
    stage_first_entered: dict[str, int] = field(default_factory=dict)
    counts_by_type: dict[str, int] = field(default_factory=dict)
    counts_by_channel: dict[str, int] = field(default_factory=dict)
    category_views: dict[str, int] = field(default_factory=dict)
    cart: Cart = field(default_factory=Cart)
    touchpoints: list[Touchpoint] = field(default_factory=list)
    purchases: Purchases = field(default_factory=Purchases)
    session: Session = field(default_factory=Session)
    dwell_ms_total: int = 0
    seen: str = ""
    offsets: dict[str, int] = field(default_factory=dict)
    predictions: dict[str, Any] | None = None
    alerts: dict[str, int] = field(default_factory=dict)
    first_channel: str | None = None
    score_history: list[ScorePoint] = field(default_factory=list)
    personalization: bool = True
    consent_at: int = 0
    experiments: dict[str, Assignment] = field(default_factory=dict)
    v: int = SCHEMA_VERSION

    def copy(self) -> JourneyState:
        """A copy that shares only immutable leaves, so mutating it leaves `self` intact."""
        cart, purchases, session = self.cart, self.purchases, self.session
        return JourneyState(
            customer_id=self.customer_id,
            journey_map=self.journey_map,
            stage=self.stage,
            stage_entered_at=self.stage_entered_at,
            first_event_at=self.first_event_at,
            last_event_at=self.last_event_at,
            events_applied=self.events_applied,
            stage_history=self.stage_history.copy(),
            stage_first_entered=self.stage_first_entered.copy(),
            counts_by_type=self.counts_by_type.copy(),
            counts_by_channel=self.counts_by_channel.copy(),
            category_views=self.category_views.copy(),
            cart=Cart(cart.items.copy(), cart.opened_at, cart.updated_at),
            touchpoints=self.touchpoints.copy(),
            purchases=Purchases(
                purchases.count,
                purchases.items,
                purchases.total_spend,
                purchases.last_at,
                purchases.order_keys.copy(),
                purchases.recent_products.copy(),
            ),
            session=Session(session.id, session.count, session.started_at, session.events),
            dwell_ms_total=self.dwell_ms_total,
            seen=self.seen,
            offsets=self.offsets.copy(),
            predictions=self.predictions,
            alerts=self.alerts.copy(),
            first_channel=self.first_channel,
            score_history=self.score_history.copy(),
            personalization=self.personalization,
            consent_at=self.consent_at,
            experiments=self.experiments.copy(),
        )


def encode_state(state: JourneyState) -> bytes:
    """JSON bytes for Redis (leaves become arrays)."""
    return orjson.dumps(state_to_dict(state), default=tuple)


def decode_state(raw: bytes | str) -> JourneyState:
    """The inverse of `encode_state`."""
    return state_from_dict(orjson.loads(raw))


def state_to_dict(state: JourneyState) -> dict[str, Any]:
    cart, purchases, session = state.cart, state.purchases, state.session
    out: dict[str, Any] = {
        "v": state.v,
        "customer_id": state.customer_id,
        "journey_map": state.journey_map,
        "stage": state.stage,
        "stage_entered_at": state.stage_entered_at,
        "first_event_at": state.first_event_at,
        "last_event_at": state.last_event_at,
        "events_applied": state.events_applied,
        "stage_history": state.stage_history,
        "stage_first_entered": state.stage_first_entered,
        "counts_by_type": state.counts_by_type,
        "counts_by_channel": state.counts_by_channel,
        "category_views": state.category_views,
        "cart": [list(cart.items.values()), cart.opened_at, cart.updated_at],
        "touchpoints": state.touchpoints,
        "purchases": [
            purchases.count,
            purchases.items,
            purchases.total_spend,
            purchases.last_at,
            purchases.order_keys,
            purchases.recent_products,
        ],
        "session": [session.id, session.count, session.started_at, session.events],
        "dwell_ms_total": state.dwell_ms_total,
        "seen": state.seen,
        "offsets": state.offsets,
        "predictions": state.predictions,
        "alerts": state.alerts,
        "first_channel": state.first_channel,
        "score_history": state.score_history,
    }
    if state.consent_at:  # most customers never send one: keep their record short
        out["personalization"] = state.personalization
        out["consent_at"] = state.consent_at
    if state.experiments:
        out["experiments"] = state.experiments
    return out


new_leaf: Final = tuple.__new__
"""Builds a leaf from a tuple or row of all its fields: a C call, where calling the class runs
its generated Python `__new__` (each fold step and each decoded journey build several)."""

L = TypeVar("L", bound=tuple[Any, ...])


def _leaves(leaf: type[L], rows: Iterable[list[Any]]) -> list[L]:
    """Leaves from their stored rows; a row shorter than the leaf (written before a field was
    added) gets the field's default from the class."""
    width = len(leaf._fields)  # type: ignore[attr-defined]
    return [new_leaf(leaf, row) if len(row) == width else leaf(*row) for row in rows]


def state_from_dict(data: dict[str, Any]) -> JourneyState:
    if data.get("v") != SCHEMA_VERSION:
        raise ValueError(f"journey state schema {data.get('v')!r} is not {SCHEMA_VERSION}")
    items, opened_at, updated_at = data["cart"]
    count, items_bought, spend, last_at, order_keys, recent = data["purchases"]
    return JourneyState(
        customer_id=data["customer_id"],
        journey_map=data["journey_map"],
        stage=data["stage"],
        stage_entered_at=data["stage_entered_at"],
        first_event_at=data["first_event_at"],
        last_event_at=data["last_event_at"],
        events_applied=data["events_applied"],
        stage_history=_leaves(StageVisit, data["stage_history"]),
        stage_first_entered=data["stage_first_entered"],
        counts_by_type=data["counts_by_type"],
        counts_by_channel=data["counts_by_channel"],
        category_views=data["category_views"],
        cart=Cart({item[0]: item for item in _leaves(CartItem, items)}, opened_at, updated_at),
        touchpoints=_leaves(Touchpoint, data["touchpoints"]),
        purchases=Purchases(
            count, items_bought, spend, last_at, order_keys, _leaves(RecentProduct, recent)
        ),
        session=Session(*data["session"]),
        dwell_ms_total=data["dwell_ms_total"],
        seen=data["seen"],
        offsets=data["offsets"],
        predictions=data.get("predictions"),
        alerts=data.get("alerts") or {},
        first_channel=data.get("first_channel"),
        score_history=_leaves(ScorePoint, data.get("score_history") or ()),
        personalization=data.get("personalization", True),
        consent_at=data.get("consent_at", 0),
        experiments={
            name: Assignment(v, at, until, tuple(success), context, status, announced)
            for name, (v, at, until, success, context, status, announced) in (
                data.get("experiments") or {}
            ).items()
        },
    )
