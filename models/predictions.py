"""What the models say about a journey now: abandonment risk and next-stage distribution.

The same function scores in the consumer (at each customer's newest event) and in the API
(at request time, so features that depend on idle time move while the customer is away).
"""

from __future__ import annotations

from typing import Any

from models.features import features
from models.state import JourneyState
from models.training import TrainingState


def predict(training: TrainingState, state: JourneyState, now_ms: int) -> dict[str, Any]:
    """Scores at `now_ms` for a journey as of `now_ms`; abandonment only while the cart is open.

    `model_version` is `"fallback"` while a model has not yet learned enough to be served.
    """
    x = features(state, now_ms)
    abandonment = None
    if state.cart.items:
        model = training.abandonment
        risk = model.predict_proba_one(x, stage=state.stage).get(True, 0.0)
        abandonment = {"risk": round(risk, 6), "model_version": model.version}
    stage_model = training.next_stage
    probabilities = stage_model.predict_proba_one(x, stage=state.stage)
    return {
        "at": now_ms,
        "abandonment": abandonment,
        "next_stage": {
            "probabilities": {str(k): round(v, 6) for k, v in probabilities.items()},
            "model_version": stage_model.version,
        },
    }


def explain(
    training: TrainingState, state: JourneyState, now_ms: int, *, top: int = 5
) -> dict[str, list[tuple[str, float]]]:
    """Per model, the feature terms that drove its score most (empty for a fallback)."""
    x = features(state, now_ms)
    drivers = {"next_stage": training.next_stage.explain(x, stage=state.stage, top=top)}
    if state.cart.items:
        drivers["abandonment"] = training.abandonment.explain(x, stage=state.stage, top=top)
    return drivers
