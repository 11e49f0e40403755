"""Scoring with whatever snapshot this process serves, for the consumer and the API alike."""

from __future__ import annotations

from typing import Any

from models.predictions import predict
from models.state import JourneyState
from models.training import TrainingState
from service.metrics import ModelMetrics
from service.snapshots import ModelRegistry


class LiveScorer:
    """Scores with the newest loaded snapshot, or with untrained models (their fallbacks)."""

    def __init__(self, registry: ModelRegistry, cold: TrainingState, metrics: ModelMetrics) -> None:
        self.registry = registry
        self._cold = cold
        self._served = metrics.predictions

    @property
    def training(self) -> TrainingState:
        loaded = self.registry.current
        return loaded.models if loaded is not None else self._cold

    async def refresh(self) -> None:
        """Pick up a newer snapshot if one was published (rate-limited by the registry)."""
        await self.registry.refresh()

    def score(self, state: JourneyState, now_ms: int) -> dict[str, Any]:
        scores = predict(self.training, state, now_ms)
        for model in ("abandonment", "next_stage"):
            if scores[model] is not None:
                source = "fallback" if scores[model]["model_version"] == "fallback" else "model"
                self._served.labels(model, source).inc()
        return scores
