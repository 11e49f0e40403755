"""The array form of linear models scores exactly as River does."""

from __future__ import annotations

import random
from typing import Any

import pytest

from models.events import Event
from models.features import BASE_FEATURES, feature_vector, features, from_vector
from models.fold import Fold
from models.journeymap import load_journey_map
from models.learners import abandonment_model, next_stage_model
from models.linear import compile_pipeline
from models.predictions import Point, Predictor
from models.state import JourneyState
from models.training import TrainingState, new_training_state
from tests.support import STAGES, journey_stream, synthetic_samples


def _journeys() -> list[JourneyState]:
    fold = Fold(load_journey_map("retail"))
    states: dict[str, JourneyState] = {}
    for raw in journey_stream(customers=40, events=800, seed=3):
        event = Event.model_validate(raw)
        states[event.customer_id] = fold.apply(states.get(event.customer_id), event)
    return list(states.values())


@pytest.mark.parametrize(
    ("factory", "pipeline"),
    [
        (abandonment_model, "logreg"),
        (next_stage_model, "softmax"),
    ],
)
def test_compile_pipeline_trained_model_matches_river_probabilities(
    factory: object, pipeline: str
) -> None:
    model = factory(pipeline=pipeline, min_samples=0)  # type: ignore[operator]
    rng = random.Random(1)
    for sample in synthetic_samples(300):
        label = sample.label if model.task == sample.kind else None
        if label is None:
            label = rng.random() < 0.5 if model.task == "abandonment" else rng.choice(STAGES)
        model.learn_one(from_vector(sample.x, sample.stage), label, stage=sample.stage)
    compiled = compile_pipeline(model.pipeline)
    assert compiled is not None
    rows = [([rng.uniform(-2, 5) for _ in BASE_FEATURES], rng.choice([*STAGES, "unseen"]))]
    rows += [(s.x, s.stage) for s in synthetic_samples(50, seed=9)]

    got = compiled.proba([x for x, _ in rows], [stage for _, stage in rows])

    for (x, stage), row in zip(rows, got, strict=True):
        expected = model.pipeline.predict_proba_one(from_vector(x, stage))
        assert set(expected) == set(compiled.labels)
        for label, p in zip(compiled.labels, row, strict=True):
            assert p == pytest.approx(expected[label], abs=1e-12)


def test_compile_pipeline_non_linear_model_is_left_to_river() -> None:
    model = next_stage_model(pipeline="hoeffding_tree")

    assert compile_pipeline(model.pipeline) is None


def test_predictor_batch_scores_equal_river_scores_cold_and_warm() -> None:
    journeys = _journeys()
    cold = new_training_state(STAGES, min_samples=10**6)
    warm = new_training_state(STAGES, min_samples=20)
    for sample in synthetic_samples(400):
        warm.learn(sample)
    assert warm.abandonment.warm
    assert warm.next_stage.warm

    for training in (cold, warm):
        points = [Point(s, feature_vector(s, s.last_event_at), s.last_event_at) for s in journeys]
        batch = Predictor(training).score_many(points)
        reference = [predict(training, s, s.last_event_at) for s in journeys]

        assert batch == reference
    assert any(score["abandonment"] for score in reference)


def test_predictor_risk_alone_equals_the_risk_of_the_full_scores_cold_and_warm() -> None:
    carts = [s for s in _journeys() if s.cart.items]
    assert carts
    warm = new_training_state(STAGES, min_samples=20)
    for sample in synthetic_samples(400):
        warm.learn(sample)

    for training in (new_training_state(STAGES, min_samples=10**6), warm):
        later = [Point(s, feature_vector(s, s.last_event_at + 600_000), 0) for s in carts]
        full = Predictor(training).score_many(later)

        assert Predictor(training).risk_many(later) == [f["abandonment"]["risk"] for f in full]


def predict(training: TrainingState, state: JourneyState, now_ms: int) -> dict[str, Any]:
    """Scores at `now_ms` through River itself: the reference `Predictor` must agree with."""
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
