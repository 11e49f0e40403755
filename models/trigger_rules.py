"""When the journey emits a trigger, and what it carries: pure rules the consumers apply.

Each rule looks at one applied event (or one resolution) and the journey, and returns the
trigger to publish, or None. Ids are deterministic (`models.triggers.trigger_id`: the
causing event's digest, or the abandoned cart's deadline), so a consumer that repeats work
after a crash re-emits the same ids. What was sent is remembered in `JourneyState.alerts`,
written atomically with the journey: `cart.at_risk` goes once per cart, and `Caps` holds a
trigger type to one per customer per window of event time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from models.events import Event
from models.labels import ABANDONMENT, Sample
from models.state import CartItem, JourneyState
from models.triggers import Trigger, TriggerType, trigger_id

AT_RISK_CART: Final = "cart.at_risk@cart"
"""`alerts` key: the `opened_at` of the cart a `cart.at_risk` was sent for."""


def cart_payload(items: Iterable[CartItem]) -> dict[str, Any]:
    """The cart as triggers carry it: lines (newest first) and value."""
    lines = sorted(items, key=lambda i: (-i.added_at, i.product_id))
    value = round(sum(i.quantity * i.price for i in lines), 2)
    return {
        "items": [
            {"product_id": i.product_id, "quantity": i.quantity, "price": i.price,
             "category": i.category}
            for i in lines
        ],
        "value": value,
        "units": sum(i.quantity for i in lines),
    }  # fmt: skip


def _risk(state: JourneyState) -> float | None:
    scored = (state.predictions or {}).get("abandonment")
    return float(scored["risk"]) if scored else None


def _trigger(
    kind: TriggerType, state: JourneyState, cause: str, at: int, payload: dict[str, Any]
) -> Trigger:
    body = {"stage": state.stage, **payload}
    return Trigger(
        trigger_id(kind, state.customer_id, cause), kind, state.customer_id, state.journey_map,
        at, body,
    )  # fmt: skip


def stage_changed(
    prev_stage: str | None, state: JourneyState, event: Event, digest: str
) -> Trigger | None:
    """`journey.stage_changed` when the event moved the customer (a first event does not)."""
    if prev_stage is None or prev_stage == state.stage:
        return None
    cause = {"event_id": event.event_id, "type": event.type, "channel": event.channel}
    payload = {"from": prev_stage, "to": state.stage, "event": cause}
    return _trigger("journey.stage_changed", state, digest, event.timestamp_ms, payload)


def converted(
    cart_before: Mapping[str, CartItem], state: JourneyState, event: Event, digest: str
) -> Trigger | None:
    """`customer.converted` when a purchase closes an open cart (cancel pending reminders)."""
    if event.type != "purchase" or not cart_before:
        return None
    payload = {
        "order_id": event.properties.order_id,
        "cart": cart_payload(cart_before.values()),
        "cart_open": bool(state.cart.items),
    }
    return _trigger("customer.converted", state, digest, event.timestamp_ms, payload)


def abandoned(
    samples: Sequence[Sample], state: JourneyState, cart: Mapping[str, CartItem]
) -> Trigger | None:
    """`cart.abandoned` when the abandonment label resolved as abandoned (deadline passed).

    `cart` is the cart the deadline applied to (before any event that resolved it late).
    """
    deadlines = [s.resolved_at for s in samples if s.kind == ABANDONMENT and s.label is True]
    if not deadlines or not cart:
        return None
    deadline = max(deadlines)
    payload = {
        "cart": cart_payload(cart.values()),
        "risk": _risk(state),
        "deadline_at": deadline,
        "last_channel": state.touchpoints[-1].channel if state.touchpoints else None,
    }
    return _trigger("cart.abandoned", state, str(deadline), deadline, payload)


def at_risk(state: JourneyState, at: int, threshold: float) -> Trigger | None:
    """`cart.at_risk` once per cart, when its attached risk is at or above `threshold`."""
    cart = state.cart
    risk = _risk(state)
    if not cart.items or risk is None or risk < threshold or cart.opened_at is None:
        return None
    if state.alerts.get(AT_RISK_CART) == cart.opened_at:
        return None
    state.alerts[AT_RISK_CART] = cart.opened_at
    payload = {"cart": cart_payload(cart.items.values()), "risk": risk, "threshold": threshold}
    return _trigger("cart.at_risk", state, str(cart.opened_at), at, payload)


@dataclass(frozen=True, slots=True)
class Caps:
    """At most one trigger of a type per customer per window of event time (ms), by type."""

    windows: Mapping[str, int] = field(default_factory=dict)

    def admit(self, state: JourneyState, trigger: Trigger) -> bool:
        """Whether `trigger` may go; records it in `state.alerts` when it does."""
        window = self.windows.get(trigger.type)
        if window is None:
            return True
        last = state.alerts.get(trigger.type)
        if last is not None and trigger.at - last < window:
            return False
        state.alerts[trigger.type] = trigger.at
        return True
