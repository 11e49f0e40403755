"""Progressive-validation scores of the online models, over a lifetime or a rolling window.

A score is fed one *outcome* per prediction: only what its metrics read of it (the label, the
predicted label, the probabilities used), so a window of the last N outcomes stays small in a
snapshot. Each score also `revert`s an outcome, which is River's `Rollable` protocol:
`river.utils.Rolling(BinaryScore, window_size=N)` is the same score over the last N outcomes.

ROC AUC is River's thresholded estimate (`metrics.ROCAUC(n_thresholds=50)`), computed from
per-bin counts (`ThresholdROCAUC`) so that an update or a revert costs O(1) instead of one
confusion-matrix update per threshold: the rolling window pays for two of them per sample.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable
from typing import Any, Protocol, TypeVar

from river import metrics as river_metrics

_metrics: Any = river_metrics  # unannotated in River: typed Any so strict mypy lets us call it

L = TypeVar("L", bound=Hashable)
Out = TypeVar("Out")

BinaryOutcome = tuple[bool, float]
"""The label and the predicted P(True)."""

MulticlassOutcome = tuple[str, str, float]
"""The label, the most likely label predicted, and the probability the label was given."""


class Score(Protocol[L, Out]):
    """Metrics of probabilistic predictions, fed one outcome at a time and able to forget one."""

    def __init__(self) -> None: ...

    def outcome(self, y: L, proba: dict[L, float]) -> Out | None: ...

    def update(self, outcome: Out) -> None: ...

    def revert(self, outcome: Out) -> None: ...

    def get(self) -> dict[str, float]: ...


class ThresholdROCAUC:
    """River's `metrics.ROCAUC(n_thresholds)` value, with O(1) `update` and `revert`.

    River updates one confusion matrix per threshold; a sample's effect on all of them is
    fixed by how many thresholds its score exceeds, so counting samples per such bin is enough
    to rebuild every true- and false-positive rate when asked.

    >>> auc = ThresholdROCAUC(n_thresholds=20)
    >>> for y, p in [(False, 0.1), (False, 0.4), (True, 0.35), (True, 0.8)]:
    ...     auc.update(y, p)
    >>> round(auc.get(), 4)
    0.75
    """

    def __init__(self, n_thresholds: int = 50) -> None:
        thresholds = [i / (n_thresholds - 1) for i in range(n_thresholds)]
        thresholds[0] -= 1e-7  # as River: a score of exactly 0 or 1 falls inside the range
        thresholds[-1] += 1e-7
        self.thresholds = thresholds
        self._positives = [0] * (n_thresholds + 1)  # index: thresholds the score exceeds
        self._negatives = [0] * (n_thresholds + 1)

    def update(self, y: bool, p: float) -> None:
        counts = self._positives if y else self._negatives
        counts[bisect.bisect_left(self.thresholds, p)] += 1

    def revert(self, y: bool, p: float) -> None:
        counts = self._positives if y else self._negatives
        counts[bisect.bisect_left(self.thresholds, p)] -= 1

    def get(self) -> float:
        """The area under the (false, true positive rate) curve through every threshold."""
        positives, negatives = sum(self._positives), sum(self._negatives)
        above_p, above_n = positives, negatives
        tprs, fprs = [], []
        for bin_p, bin_n in zip(self._positives, self._negatives[:-1], strict=False):
            above_p -= bin_p  # scores in higher bins exceed this threshold
            above_n -= bin_n
            tprs.append(above_p / positives if positives else 0.0)
            fprs.append(above_n / negatives if negatives else 0.0)
        area = 0.0
        for i in range(len(tprs) - 1):
            area += (fprs[i] - fprs[i + 1]) * (tprs[i] + tprs[i + 1]) / 2
        return area


class BinaryScore:
    """ROC AUC, log loss, Brier score and positive rate of probabilistic binary predictions."""

    def __init__(self) -> None:
        self.roc_auc = ThresholdROCAUC(n_thresholds=50)  # River's default 10 overstates AUC
        self.log_loss = _metrics.LogLoss()
        self._brier_sum = 0.0
        self._positives = 0
        self._n = 0

    @staticmethod
    def outcome(y: bool, proba: dict[bool, float]) -> BinaryOutcome:
        return bool(y), proba.get(True, 0.0)

    def update(self, outcome: BinaryOutcome) -> None:
        y, p = outcome
        self.roc_auc.update(y, p)
        self.log_loss.update(y, p)
        self._brier_sum += (p - y) ** 2
        self._positives += y
        self._n += 1

    def revert(self, outcome: BinaryOutcome) -> None:
        y, p = outcome
        self.roc_auc.revert(y, p)
        self.log_loss.revert(y, p)
        self._brier_sum -= (p - y) ** 2
        self._positives -= y
        self._n -= 1

    def get(self) -> dict[str, float]:
        """The metrics so far; ROC AUC only once both outcomes were seen (undefined before)."""
        n = self._n or 1
        scores = {
            "log_loss": float(self.log_loss.get()),
            "brier": max(self._brier_sum, 0.0) / n,  # reverts may leave a rounding error below 0
            "positive_rate": self._positives / n,
        }
        if 0 < self._positives < self._n:
            scores["roc_auc"] = float(self.roc_auc.get()) + 0.0  # River's AUC can be -0.0
        return scores


class MulticlassScore:
    """Accuracy, macro F1 and log loss (cross-entropy) of probabilistic multiclass predictions.

    A sample scored while no class is known yet is skipped: there was no prediction to judge.
    A label missing from the prediction counts with probability 0 (log loss clamps it at 1e-15).
    Macro F1 averages over the classes present (as a label or a prediction) in what is scored.
    """

    def __init__(self) -> None:
        self.accuracy = _metrics.Accuracy()
        self.macro_f1 = _metrics.MacroF1()
        self.log_loss = _metrics.CrossEntropy()

    @staticmethod
    def outcome(y: str, proba: dict[str, float]) -> MulticlassOutcome | None:
        if not proba:
            return None
        return y, max(proba, key=proba.__getitem__), proba.get(y, 0.0)

    def update(self, outcome: MulticlassOutcome) -> None:
        y, predicted, p = outcome
        self.accuracy.update(y, predicted)
        self.macro_f1.update(y, predicted)
        self.log_loss.update(y, {y: p})  # cross-entropy reads only the label's probability

    def revert(self, outcome: MulticlassOutcome) -> None:
        y, predicted, p = outcome
        self.accuracy.revert(y, predicted)
        self.macro_f1.revert(y, predicted)
        self.log_loss.revert(y, {y: p})

    def get(self) -> dict[str, float]:
        return {
            "accuracy": float(self.accuracy.get()),
            "macro_f1": float(self.macro_f1.get()),
            "log_loss": float(self.log_loss.get()),
        }
