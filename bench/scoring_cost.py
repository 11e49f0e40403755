"""Scoring cost per journey: batched array form (`models.linear`) against River one by one.

Trains both models on synthetic samples until warm, folds journeys from a generated stream,
then times `Predictor.score_many` over all of them against River's `predict_proba_one` for
each journey and model. Prints the median of several runs of each, in microseconds per
journey.

    python -m bench.scoring_cost --journeys 2000 --runs 5
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from models.events import Event
from models.features import BASE_FEATURES, feature_vector, features
from models.fold import Fold
from models.journeymap import load_journey_map
from models.labels import ABANDONMENT, NEXT_STAGE, Kind, Label, Sample
from models.predictions import Point, Predictor
from models.state import JourneyState
from models.training import TrainingState, new_training_state
from tests.support import journey_stream

STAGES = list(load_journey_map("retail").stages)


def trained(samples: int = 2000) -> TrainingState:
    rng = random.Random(3)
    state = new_training_state(STAGES, min_samples=100)
    for i in range(samples):
        x = [rng.random() for _ in BASE_FEATURES]
        stage = rng.choice(STAGES)
        kind: Kind
        label: Label
        kind, label = (ABANDONMENT, x[0] > 0.5) if i % 2 else (NEXT_STAGE, rng.choice(STAGES))
        state.learn(Sample(f"s{i}", kind, "c", "retail", i, i, stage, x, label))
    return state


def journeys(count: int) -> list[JourneyState]:
    fold = Fold(load_journey_map("retail"))
    states: dict[str, JourneyState] = {}
    for raw in journey_stream(customers=count, events=count * 4, seed=5):
        event = Event.model_validate(raw)
        states[event.customer_id] = fold.apply(states.get(event.customer_id), event)
    return list(states.values())


def river_one_by_one(training: TrainingState, states: list[JourneyState]) -> None:
    for s in states:
        x = features(s, s.last_event_at)
        training.next_stage.predict_proba_one(x, stage=s.stage)
        if s.cart.items:
            training.abandonment.predict_proba_one(x, stage=s.stage)


def main(args: argparse.Namespace) -> None:
    training, states = trained(), journeys(args.journeys)
    predictor = Predictor(training)
    points = [Point(s, feature_vector(s, s.last_event_at), s.last_event_at) for s in states]
    batched, river = [], []
    for _ in range(args.runs):
        started = time.perf_counter()
        predictor.score_many(points)
        batched.append((time.perf_counter() - started) / len(points) * 1e6)
        started = time.perf_counter()
        river_one_by_one(training, states)
        river.append((time.perf_counter() - started) / len(states) * 1e6)
    carts = sum(bool(s.cart.items) for s in states)
    print(f"{len(states)} journeys ({carts} with an open cart), {args.runs} runs")
    print(f"batched arrays: {statistics.median(batched):.1f} us per journey (median)")
    print(f"River one by one: {statistics.median(river):.1f} us per journey (median)")
    print("(batched excludes computing the feature vector, which the consumer has already)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--journeys", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    main(parser.parse_args())
