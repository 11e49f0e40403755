"""A journey's gauge entry: its stage, the stage it left, its cart's value and value at risk."""

from __future__ import annotations

from models.gauges import JourneyGauge, journey_gauge
from models.state import Cart, CartItem, JourneyState


def _state(stage: str, cart: dict[str, CartItem], risk: float | None) -> JourneyState:
    state = JourneyState("c1", "retail", stage, 0, 0, 0, cart=Cart(cart, 0, 0))
    if risk is not None:
        state.predictions = {"at": 0, "abandonment": {"risk": risk, "model_version": 3}}
    return state


def test_open_cart_counts_its_value_and_its_value_times_risk_in_hundredths() -> None:
    cart = {"a": CartItem("a", 2, 10.25, None, 0), "b": CartItem("b", 1, 5.0, None, 0)}

    assert journey_gauge(_state("decision", cart, 0.4), "comparison") == JourneyGauge(
        "decision", "comparison", 25_50, 10_20
    )


def test_unscored_cart_has_no_value_at_risk_and_an_unmoved_journey_left_nothing() -> None:
    cart = {"a": CartItem("a", 1, 9.99, None, 0)}

    assert journey_gauge(_state("decision", cart, None), "decision") == JourneyGauge(
        "decision", None, 999, 0
    )
    assert journey_gauge(_state("awareness", {}, 0.9), None) == JourneyGauge(
        "awareness", None, 0, 0
    )
