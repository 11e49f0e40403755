"""Linear models as arrays, to score a whole batch of journeys in one matrix product.

River learns one sample at a time with dictionaries, which is right for learning and slow for
serving: a softmax prediction walks a dictionary per class. A served snapshot does not
change, so its scaler statistics and weights can be frozen into arrays once per snapshot and
a consumer batch scored in one matrix product (`bench/scoring_cost.py` measures both). The
result equals River's `predict_proba_one` up to float rounding (checked in tests); anything
not of the shape
`standardized base features + raw stage one-hot | LogisticRegression or SoftmaxRegression`
is not compiled and keeps being scored by River.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from river import compose, linear_model, preprocessing

from models.features import BASE_FEATURES, STAGE_PREFIX


@dataclass(frozen=True)
class LinearScorer:
    """Frozen scaler and weights; `proba` maps feature vectors and stages to probabilities."""

    labels: tuple[Hashable, ...]
    mean: np.ndarray
    inv_std: np.ndarray  # 0 where the scaler has seen no variance (River then yields 0)
    weights: np.ndarray  # (classes, features)
    stage_weights: dict[str, np.ndarray]  # per stage key, one weight per class
    bias: np.ndarray
    softmax: bool

    def proba(self, vectors: Sequence[Sequence[float]], stages: Sequence[str]) -> np.ndarray:
        """Probabilities per row (`labels` order) for base-feature vectors and their stages."""
        z = (np.asarray(vectors, dtype=np.float64) - self.mean) * self.inv_std
        logits = z @ self.weights.T + self.bias
        zero = np.zeros(self.bias.shape[0])
        logits += np.array([self.stage_weights.get(STAGE_PREFIX + s, zero) for s in stages])
        if self.softmax:
            logits -= logits.max(axis=1, keepdims=True)
            e = np.exp(logits)
            return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]
        p = 1.0 / (1.0 + np.exp(-np.clip(logits, -30.0, 30.0)))
        return np.concatenate([1.0 - p, p], axis=1)


def compile_pipeline(pipeline: Any) -> LinearScorer | None:
    """The array form of a `models.learners` linear pipeline, or None for any other model."""
    if not isinstance(pipeline, compose.Pipeline):
        return None
    *front, final = pipeline.steps.values()
    scaler = _scaler(front)
    if scaler is None:
        return None
    mean = np.array([scaler.means.get(f, 0.0) for f in BASE_FEATURES])
    var = [scaler.vars.get(f, 0.0) for f in BASE_FEATURES]
    inv_std = np.array([1.0 / math.sqrt(v) if v else 0.0 for v in var])
    if isinstance(final, linear_model.LogisticRegression):
        rows: dict[Hashable, dict[str, float]] = {True: dict(final._weights.items())}
        bias = np.array([float(final.intercept)])
        labels: tuple[Hashable, ...] = (False, True)
        softmax = False
    elif isinstance(final, linear_model.SoftmaxRegression):
        rows = {label: dict(w.items()) for label, w in final.weights.items()}
        labels = tuple(rows)
        bias = np.zeros(len(labels))
        softmax = True
    else:
        return None
    weights = np.array([[row.get(f, 0.0) for f in BASE_FEATURES] for row in rows.values()])
    stage_keys = {k for row in rows.values() for k in row if k.startswith(STAGE_PREFIX)}
    stage_weights = {k: np.array([row.get(k, 0.0) for row in rows.values()]) for k in stage_keys}
    return LinearScorer(labels, mean, inv_std, weights, stage_weights, bias, softmax)


def _scaler(front: list[Any]) -> Any:
    """The StandardScaler of `FuncTransformer | StandardScaler + FuncTransformer`, if that."""
    if len(front) != 1 or not isinstance(front[0], compose.TransformerUnion):
        return None
    for branch in front[0].transformers.values():
        if isinstance(branch, compose.Pipeline):
            last = list(branch.steps.values())[-1]
            if isinstance(last, preprocessing.StandardScaler) and last.window_size is None:
                return last
    return None
