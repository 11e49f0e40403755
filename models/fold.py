"""The fold `state + event -> state`: the single definition of what an event does to a journey.

`Fold.step` is pure. It never mutates its input and skips an event it has already applied,
recognised either by its log position (partition, offset) or by its `event_id`, so folding a
stream with redeliveries and client retries gives the state of each event applied once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal, TypeVar

from models.events import CONSENT_TYPE, EXPOSURE_TYPE, Event
from models.experiments import expose
from models.journeymap import METRICS, JourneyMap
from models.state import (
    CartItem,
    JourneyState,
    RecentProduct,
    StageVisit,
    Touchpoint,
    new_leaf,
)

T = TypeVar("T")
SkipReason = Literal["redelivered", "duplicate_event_id"]


@dataclass(frozen=True, slots=True)
class Limits:
    """How much history a state keeps; each list is bounded so a state cannot grow forever."""

    touchpoints: int = 20
    stage_history: int = 50
    recent_products: int = 20
    recent_orders: int = 32
    categories: int = 50
    seen_event_ids: int = 256


@dataclass(frozen=True, slots=True)
class Position:
    """Where an event sits in the log; the fence against redelivery."""

    partition: int
    offset: int


DIGEST_WIDTH: Final = 12


def event_digest(event_id: str) -> str:
    """A fixed-width (48-bit) fingerprint of an event id, kept in `JourneyState.seen`.

    In a window of 256 ids, a new id is mistaken for a seen one with odds of about 1e-12.

    >>> event_digest("e-1"), len(event_digest("e-1")) == DIGEST_WIDTH
    ('712e0a9f8fc4', True)
    """
    return hashlib.blake2b(event_id.encode(), digest_size=6).hexdigest()


def last_digest(state: JourneyState) -> str:
    """The digest of the event last applied to `state`: the tail of its dedup window."""
    return state.seen[-DIGEST_WIDTH:]


class Fold:
    """Applies events to journey states under one journey map and set of limits."""

    def __init__(self, journey_map: JourneyMap, limits: Limits | None = None) -> None:
        self.map = journey_map
        self.limits = limits or Limits()

    def step(
        self, state: JourneyState | None, event: Event, position: Position | None = None
    ) -> tuple[JourneyState, SkipReason | None]:
        """The state after `event`, or the same state and why the event was skipped. Pure."""
        return self._step(state, event, position, owned=False)

    def step_owned(
        self, state: JourneyState | None, event: Event, position: Position | None = None
    ) -> tuple[JourneyState, SkipReason | None]:
        """`step` that may change and return `state` itself instead of a copy.

        For callers that own `state` (they just decoded it and hold no other reference), so a
        batch does not pay for a copy per event. If it raises, `state` may be half changed:
        rebuild it from where it came from.
        """
        return self._step(state, event, position, owned=True)

    def apply(
        self, state: JourneyState | None, event: Event, position: Position | None = None
    ) -> JourneyState:
        """`step` without the reason."""
        return self.step(state, event, position)[0]

    def fold(
        self, state: JourneyState | None, events: Iterable[tuple[Event, Position | None]]
    ) -> JourneyState | None:
        """Apply events in order."""
        for event, position in events:
            state = self.apply(state, event, position)
        return state

    def _step(
        self, state: JourneyState | None, event: Event, position: Position | None, *, owned: bool
    ) -> tuple[JourneyState, SkipReason | None]:
        digest = event_digest(event.event_id)
        if state is not None:
            reason = _already_applied(state, digest, position)
            if reason is not None:
                return state, reason
        t = event.timestamp_ms
        if state is None:
            new = self._start(event, t)
        elif owned:
            new = state
        else:
            new = state.copy()
        self._apply(new, event, t)
        new.seen = (new.seen + digest)[-self.limits.seen_event_ids * DIGEST_WIDTH :]
        if position is not None:
            new.offsets[str(position.partition)] = position.offset
        return new, None

    def _start(self, event: Event, t: int) -> JourneyState:
        stage = self.map.initial_stage
        return JourneyState(
            customer_id=event.customer_id,
            journey_map=self.map.name,
            stage=stage,
            stage_entered_at=t,
            first_event_at=t,
            last_event_at=t,
            stage_history=[new_leaf(StageVisit, (stage, t, event.type))],
            stage_first_entered={stage: t},
            first_channel=event.channel,
        )

    def _apply(self, state: JourneyState, event: Event, t: int) -> None:
        exposure = event.properties.exposure
        if event.type == EXPOSURE_TYPE and exposure is not None:  # bookkeeping, not a touchpoint
            expose(
                state.experiments,
                exposure.experiment,
                exposure.variant,
                t,
                window_ms=exposure.window_s * 1000,
                success=exposure.success,
                context=exposure.context,
            )
            return
        self._track_session(state, event, t)
        kind, channel, props = event.type, event.channel, event.properties
        state.counts_by_type[kind] = state.counts_by_type.get(kind, 0) + 1
        state.counts_by_channel[channel] = state.counts_by_channel.get(channel, 0) + 1
        if kind == "product_view" and props.category:
            self._count_category(state, props.category)
        if kind == "add_to_cart":
            _add_to_cart(state, event, t)
        elif kind == "remove_from_cart":
            _remove_from_cart(state, event, t)
        elif kind == "purchase":
            self._purchase(state, event, t)
        elif kind == CONSENT_TYPE and props.personalization is not None and t >= state.consent_at:
            state.personalization, state.consent_at = props.personalization, t
        url = props.url
        touchpoints = state.touchpoints
        touchpoints.append(
            new_leaf(Touchpoint, (kind, channel, t, props.product_id, url[:256] if url else None))
        )
        _trim(touchpoints, self.limits.touchpoints)
        state.dwell_ms_total += props.dwell_ms or 0
        if t < state.first_event_at:
            state.first_event_at = t
        if t > state.last_event_at:
            state.last_event_at = t
        state.events_applied += 1
        measure = _measure(state, event) if self.map.has_conditions(kind) else _unmeasured
        nxt = self.map.next_stage(state.stage, kind, channel, measure)
        if nxt is not None:
            state.stage, state.stage_entered_at = nxt, t
            state.stage_history.append(new_leaf(StageVisit, (nxt, t, kind)))
            _trim(state.stage_history, self.limits.stage_history)
            state.stage_first_entered.setdefault(nxt, t)

    def _track_session(self, state: JourneyState, event: Event, t: int) -> None:
        session = state.session
        sid = event.session_id
        if sid is not None:
            starts = session.count == 0 or sid != session.id
        else:
            starts = session.count == 0 or t - state.last_event_at > self.map.session_timeout_ms
        if starts:
            session.id = sid if sid is not None else session.id
            session.count += 1
            session.started_at = t
            session.events = 0
        session.events += 1

    def _count_category(self, state: JourneyState, category: str) -> None:
        views = state.category_views
        if category not in views and len(views) >= self.limits.categories:
            del views[min(views, key=views.__getitem__)]
        views[category] = views.get(category, 0) + 1

    def _purchase(self, state: JourneyState, event: Event, t: int) -> None:
        props, cart, purchases = event.properties, state.cart, state.purchases
        if props.product_id is not None:
            in_cart = cart.items.get(props.product_id)
            qty = props.quantity or (in_cart.quantity if in_cart else 1)
            price = props.price if props.price is not None else (in_cart.price if in_cart else 0.0)
            bought = [(props.product_id, qty)]
            spend = qty * price
            _take_from_cart(state, props.product_id, qty, t)
        else:
            bought = [(item.product_id, item.quantity) for item in cart.items.values()]
            spend = props.price if props.price is not None else cart.value
            if cart.items:
                cart.items.clear()
                cart.opened_at, cart.updated_at = None, t
        order_key = props.order_id or f"session-{state.session.count}"
        if order_key not in purchases.order_keys:
            purchases.count += 1
            purchases.order_keys.append(order_key)
            _trim(purchases.order_keys, self.limits.recent_orders)
        purchases.items += sum(qty for _, qty in bought)
        purchases.total_spend = round(purchases.total_spend + spend, 2)
        purchases.last_at = t if purchases.last_at is None else max(purchases.last_at, t)
        recent = purchases.recent_products
        for product_id, _ in bought:
            recent[:] = [r for r in recent if r.product_id != product_id]
            recent.append(RecentProduct(product_id, t))
        _trim(recent, self.limits.recent_products)


def _already_applied(
    state: JourneyState, digest: str, position: Position | None
) -> SkipReason | None:
    if position is not None:
        last = state.offsets.get(str(position.partition))
        if last is not None and position.offset <= last:
            return "redelivered"
    seen = state.seen
    at = seen.find(digest)
    while at != -1:
        if at % DIGEST_WIDTH == 0:
            return "duplicate_event_id"
        at = seen.find(digest, at + 1)
    return None


def _add_to_cart(state: JourneyState, event: Event, t: int) -> None:
    props, cart = event.properties, state.cart
    if props.product_id is None:
        return
    existing = cart.items.get(props.product_id)
    qty = props.quantity or 1
    if not cart.items:
        cart.opened_at = t
    cart.items[props.product_id] = CartItem(
        product_id=props.product_id,
        quantity=qty + (existing.quantity if existing else 0),
        price=props.price if props.price is not None else (existing.price if existing else 0.0),
        category=props.category or (existing.category if existing else None),
        added_at=existing.added_at if existing else t,
    )
    cart.updated_at = t


def _remove_from_cart(state: JourneyState, event: Event, t: int) -> None:
    product_id = event.properties.product_id
    if product_id is not None and product_id in state.cart.items:
        qty = event.properties.quantity or state.cart.items[product_id].quantity
        _take_from_cart(state, product_id, qty, t)


def _take_from_cart(state: JourneyState, product_id: str, qty: int, t: int) -> None:
    cart = state.cart
    item = cart.items.get(product_id)
    if item is None:
        return
    if qty >= item.quantity:
        del cart.items[product_id]
    else:
        cart.items[product_id] = CartItem(
            item.product_id, item.quantity - qty, item.price, item.category, item.added_at
        )
    cart.updated_at = t
    if not cart.items:
        cart.opened_at = None


def _trim(items: list[T], limit: int) -> None:
    if len(items) > limit:
        del items[: len(items) - limit]


_MEASURES: Final[dict[str, Callable[[JourneyState, Event], float]]] = {
    "purchases": lambda s, e: s.purchases.count,
    "category_views": lambda s, e: s.category_views.get(e.properties.category or "", 0),
    "product_views": lambda s, e: s.counts_by_type.get("product_view", 0),
    "type_count": lambda s, e: s.counts_by_type.get(e.type, 0),
    "sessions": lambda s, e: s.session.count,
    "session_events": lambda s, e: s.session.events,
    "cart_items": lambda s, e: s.cart.units,
    "cart_value": lambda s, e: s.cart.value,
    "total_spend": lambda s, e: s.purchases.total_spend,
    "price": lambda s, e: e.properties.price or 0.0,
    "dwell_ms": lambda s, e: e.properties.dwell_ms or 0,
}
assert set(_MEASURES) == set(METRICS), "every documented metric needs a measure"


def _unmeasured(name: str) -> float:
    raise AssertionError(f"no rule for this event type tests {name}")


def _measure(state: JourneyState, event: Event) -> Callable[[str], float]:
    return lambda name: _MEASURES[name](state, event)
