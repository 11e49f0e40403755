"""When triggers fire: stage changes, conversions, abandoned and at-risk carts, and caps."""

from __future__ import annotations

from typing import Any

from models.events import Event
from models.fold import Fold, event_digest
from models.labels import Sample
from models.state import JourneyState
from models.trigger_rules import AT_RISK_CART, Caps, abandoned, at_risk, converted, stage_changed
from models.triggers import Trigger
from tests.unit.conftest import make_event, ms


def carted(fold: Fold) -> tuple[JourneyState, Event]:
    first = make_event(type="product_view", properties={"product_id": "p1"})
    cart = make_event(minutes=1, type="add_to_cart", properties={"product_id": "p1", "price": 30.0})
    state = fold.apply(fold.apply(None, first), cart)
    return state, cart


def with_risk(state: JourneyState, risk: float) -> JourneyState:
    state.predictions = {"abandonment": {"risk": risk, "model_version": "1"}}
    return state


def test_stage_changed_fires_on_a_move_with_the_causing_event(fold: Fold) -> None:
    state, cart = carted(fold)

    trigger = stage_changed("consideration", state, cart, event_digest(cart.event_id))

    assert trigger is not None
    assert trigger.type == "journey.stage_changed"
    assert trigger.payload["from"] == "consideration"
    assert trigger.payload["to"] == "decision"
    assert trigger.payload["event"]["event_id"] == cart.event_id
    assert trigger.at == ms(1)
    assert trigger.id == f"journey.stage_changed:c1:{event_digest(cart.event_id)}"
    assert stage_changed("decision", state, cart, "d") is None
    assert stage_changed(None, state, cart, "d") is None


def test_converted_fires_when_a_purchase_closes_an_open_cart(fold: Fold) -> None:
    state, _ = carted(fold)
    cart_before = dict(state.cart.items)
    purchase = make_event(minutes=3, type="purchase", properties={"order_id": "o-9"})
    after = fold.apply(state, purchase)

    trigger = converted(cart_before, after, purchase, "d9")

    assert trigger is not None
    assert trigger.payload["order_id"] == "o-9"
    assert trigger.payload["cart"]["value"] == 30.0
    assert trigger.payload["cart_open"] is False
    assert trigger.payload["stage"] == "purchase"
    assert converted({}, after, purchase, "d9") is None


def sample(label: Any, resolved_at: int, kind: str = "abandonment") -> Sample:
    return Sample(
        f"a:c1:{resolved_at}", kind, "c1", "retail", 0, resolved_at, "decision", [], label
    )  # type: ignore[arg-type]


def test_abandoned_fires_once_per_episode_at_its_deadline(fold: Fold) -> None:
    state, _ = carted(fold)
    with_risk(state, 0.7)
    deadline = ms(61)

    trigger = abandoned([sample(True, deadline), sample(True, deadline)], state, state.cart.items)

    assert trigger is not None
    assert trigger.id == f"cart.abandoned:c1:{deadline}"
    assert trigger.at == deadline
    assert trigger.payload["risk"] == 0.7
    assert [i["product_id"] for i in trigger.payload["cart"]["items"]] == ["p1"]
    assert abandoned([sample(False, deadline)], state, state.cart.items) is None
    assert abandoned([sample("decision", deadline, "next_stage")], state, state.cart.items) is None


def test_at_risk_fires_once_per_cart_above_the_threshold(fold: Fold) -> None:
    state, _ = carted(fold)

    assert at_risk(with_risk(state, 0.4), ms(2), 0.5) is None
    first = at_risk(with_risk(state, 0.6), ms(3), 0.5)
    again = at_risk(with_risk(state, 0.9), ms(4), 0.5)

    assert first is not None
    assert first.payload["risk"] == 0.6
    assert again is None
    assert state.alerts[AT_RISK_CART] == state.cart.opened_at
    state.cart.opened_at = ms(10)  # a new cart later on
    assert at_risk(with_risk(state, 0.6), ms(11), 0.5) is not None


def test_caps_hold_a_type_to_one_per_window_of_event_time(fold: Fold) -> None:
    state, _ = carted(fold)
    caps = Caps({"cart.abandoned": 24 * 3_600_000})

    def trig(hours: float, kind: Any = "cart.abandoned") -> Trigger:
        return Trigger(f"t{hours}", kind, "c1", "retail", ms(hours * 60))

    assert caps.admit(state, trig(0))
    assert not caps.admit(state, trig(23.9))
    assert caps.admit(state, trig(24))
    assert caps.admit(state, trig(24.1, "journey.stage_changed"))  # not capped
