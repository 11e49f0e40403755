"""Scoring with whatever snapshot this process serves, for the consumer and the API alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models.learners import FALLBACK_VERSION
from models.predictions import Point, Predictor
from models.training import TrainingState
from service.metrics import ModelMetrics
from service.snapshots import ModelRegistry


class LiveScorer:
    """Scores with the newest loaded snapshot, or with untrained models (their fallbacks)."""

    def __init__(self, registry: ModelRegistry, cold: TrainingState, metrics: ModelMetrics) -> None:
        self.registry = registry
        self._cold = Predictor(cold)
        self._served = metrics.predictions
        self._predictor: tuple[int, Predictor] | None = None

    async def refresh(self) -> None:
        """Pick up a newer snapshot if one was published (rate-limited by the registry)."""
        await self.registry.refresh()

    @property
    def predictor(self) -> Predictor:
        """The predictor of the snapshot served now, built once per snapshot."""
        loaded = self.registry.current
        if loaded is None:
            return self._cold
        if self._predictor is None or self._predictor[0] != loaded.version:
            self._predictor = (loaded.version, Predictor(loaded.models))
        return self._predictor[1]

    @property
    def version(self) -> str:
        """The served snapshot's version, or 'untrained' before the first one is published."""
        loaded = self.registry.current
        return str(loaded.version) if loaded is not None else "untrained"

    @property
    def training(self) -> TrainingState:
        return self.predictor.training

    def score_many(self, points: Sequence[Point]) -> list[dict[str, Any]]:
        scores = self.predictor.score_many(points)
        self._count(scores)
        return scores

    def risk_many(self, points: Sequence[Point]) -> list[float]:
        """`Predictor.risk_many`, counted as abandonment scores served."""
        risks = self.predictor.risk_many(points)
        if risks:
            source = _source(self.training.abandonment.version)
            self._served.labels("abandonment", source).inc(len(risks))
        return risks

    def _count(self, scores: list[dict[str, Any]]) -> None:
        counts: dict[tuple[str, str], int] = {}
        for score in scores:
            for model in ("abandonment", "next_stage"):
                if score[model] is not None:
                    source = _source(score[model]["model_version"])
                    counts[model, source] = counts.get((model, source), 0) + 1
        for (model, source), count in counts.items():
            self._served.labels(model, source).inc(count)


def _source(version: str) -> str:
    """The `source` label of a served score: an untrained model's fallback, or the model."""
    return "fallback" if version == FALLBACK_VERSION else "model"
