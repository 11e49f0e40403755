"""What the models say about a journey now: abandonment risk and next-stage distribution.

The same code scores in the consumer (a batch of journeys at their newest events) and in the
API (one journey at request time, so features that depend on idle time move while the
customer is away). Warm linear models are scored through their array form (`models.linear`),
everything else through River.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, NamedTuple

from models.features import feature_vector, from_vector
from models.learners import OnlineModel
from models.linear import LinearScorer, compile_pipeline
from models.state import JourneyState, ScorePoint
from models.training import TrainingState

SCORE_HISTORY = 12
"""Score points a journey keeps for its timeline (each ~60 bytes of its stored form)."""
RISK_STEP = 0.05
"""A risk change this large (or a cart opening or closing) is worth a new score point."""


class Point(NamedTuple):
    """A journey to score, with its feature vector at `at` (from `feature_vector`)."""

    state: JourneyState
    x: list[float]
    at: int


def point(state: JourneyState, now_ms: int) -> Point:
    """`state` with its features at `now_ms`, ready to score or explain."""
    return Point(state, feature_vector(state, now_ms), now_ms)


class Predictor:
    """Scores journeys with one `TrainingState`; build one per snapshot served."""

    def __init__(self, training: TrainingState) -> None:
        self.training = training
        self._abandonment = _compiled(training.abandonment)
        self._next_stage = _compiled(training.next_stage)

    def score_many(self, points: Sequence[Point]) -> list[dict[str, Any]]:
        """Scores per point; abandonment only while the cart holds items.

        `model_version` is `"fallback"` while a model has not yet learned enough to be served.
        """
        carts = [p for p in points if p.state.cart.items]
        risks = self._proba(self.training.abandonment, self._abandonment, carts)
        odds = self._proba(self.training.next_stage, self._next_stage, points)
        risk_of = {id(p): r.get(True, 0.0) for p, r in zip(carts, risks, strict=True)}
        a_version, n_version = self.training.abandonment.version, self.training.next_stage.version
        rounded: dict[int, dict[str, float]] = {}  # a fallback's rows repeat: round each once
        scores = []
        for p, o in zip(points, odds, strict=True):
            probabilities = rounded.get(id(o))
            if probabilities is None:
                probabilities = rounded[id(o)] = {str(k): round(v, 6) for k, v in o.items()}
            risk = risk_of.get(id(p))
            scores.append(
                {
                    "at": p.at,
                    "abandonment": None
                    if risk is None
                    else {"risk": round(risk, 6), "model_version": a_version},
                    "next_stage": {
                        "probabilities": probabilities.copy(),
                        "model_version": n_version,
                    },
                }
            )
        return scores

    def risk_many(self, points: Sequence[Point]) -> list[float]:
        """The abandonment risk alone, for journeys whose carts hold items (as `score_many`
        rounds it): what changes while a customer is away."""
        risks = self._proba(self.training.abandonment, self._abandonment, points)
        return [round(r.get(True, 0.0), 6) for r in risks]

    def _proba(
        self, model: OnlineModel[Any], compiled: LinearScorer | None, points: Sequence[Point]
    ) -> list[dict[Hashable, float]]:
        if not points:
            return []
        if not model.warm:  # the fallback looks at the stage only: one row per stage
            stages = {p.state.stage for p in points}
            by_stage = {s: model.predict_proba_one({}, stage=s) for s in stages}
            return [by_stage[p.state.stage] for p in points]
        if compiled is None:
            return [
                model.predict_proba_one(from_vector(p.x, p.state.stage), stage=p.state.stage)
                for p in points
            ]
        rows = compiled.proba([p.x for p in points], [p.state.stage for p in points])
        return [dict(zip(compiled.labels, map(float, row), strict=True)) for row in rows]


def _compiled(model: OnlineModel[Any]) -> LinearScorer | None:
    return compile_pipeline(model.pipeline) if model.warm else None


def explain(
    training: TrainingState, point: Point, *, top: int = 5
) -> dict[str, list[tuple[str, float]]]:
    """Per model, the feature terms that drove its score most (empty for a fallback)."""
    stage = point.state.stage
    x = from_vector(point.x, stage)
    drivers = {"next_stage": training.next_stage.explain(x, stage=stage, top=top)}
    if point.state.cart.items:
        drivers["abandonment"] = training.abandonment.explain(x, stage=stage, top=top)
    return drivers


def remember(state: JourneyState, scores: dict[str, Any], *, keep: int = SCORE_HISTORY) -> None:
    """Add `scores` to the journey's score history if they say something new.

    New means: the most likely next stage changed, the customer's stage changed, the risk
    moved by `RISK_STEP` or more, or a cart opened or closed. Ties in the next stage go to
    the stage named first. Only the newest `keep` points are kept.
    """
    probabilities = scores["next_stage"]["probabilities"]
    likely = max(sorted(probabilities), key=probabilities.__getitem__)
    abandonment = scores.get("abandonment")
    risk = None if abandonment is None else float(abandonment["risk"])
    now = ScorePoint(int(scores["at"]), state.stage, likely, float(probabilities[likely]), risk)
    history = state.score_history
    if history:
        last = history[-1]
        if now.at < last.at:
            return  # an older view than the newest kept: the timeline only moves forward
        same_risk = (last.risk is None) == (risk is None) and (
            risk is None or abs(risk - (last.risk or 0.0)) < RISK_STEP
        )
        if same_risk and (last.stage, last.next_stage) == (now.stage, now.next_stage):
            return
    history.append(now)
    del history[:-keep]
