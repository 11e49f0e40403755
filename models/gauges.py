"""What one journey contributes to the live journey gauges: its stage and its open cart.

The store keeps, per journey tag, each customer in their stage's set and each open cart's
value; the gauges (customers per stage, open carts, cart value and value at risk) are
counted from those, so they follow journeys that expire as well as those that move.
"""

from __future__ import annotations

from typing import NamedTuple

from models.state import JourneyState


class JourneyGauge(NamedTuple):
    """A journey's gauge entry; amounts in hundredths of the shop's currency unit."""

    stage: str
    left_stage: str | None  # the stage the stored journey was in, if it changed (or None)
    cart_cents: int
    at_risk_cents: int


def journey_gauge(state: JourneyState, stored_stage: str | None) -> JourneyGauge:
    """The entry for `state`, written over the one of a journey stored in `stored_stage`.

    The value at risk is the cart's value times its last abandonment risk (0 unscored).
    """
    value = state.cart.value if state.cart.items else 0.0
    risk = 0.0
    scored = (state.predictions or {}).get("abandonment")
    if value and scored:
        risk = float(scored.get("risk") or 0.0)
    left = stored_stage if stored_stage != state.stage else None
    return JourneyGauge(state.stage, left, round(value * 100), round(value * risk * 100))
