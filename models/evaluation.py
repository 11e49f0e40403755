"""How good are the journey models? Exact metrics and baselines on one list of resolved samples.

Samples reach the trainer in an order that depends on batching, so every figure here is
computed on a canonical stream: duplicates dropped by id, then sorted by `(resolved_at, id)`.
The online model is a fresh `TrainingState` run over that stream with progressive validation
(each sample scored before it is learned); the baselines see exactly the same labels:

- abandonment: the prior positive rate (`PriorRate`, the model's own cold-start fallback), the
  recency heuristic `cart_idle_log_s` (a cart idle for longer is more likely abandoned; a
  score, so ROC AUC only), and an offline LightGBM ceiling trained with hindsight on the
  first half and scored on the second half, next to the online model on that same half.
- next stage: "stays in its stage" (a point prediction: log loss is undefined and left out)
  and the progressive first-order Markov chain P(label | stage) (the model's fallback).

ROC AUC is exact (Mann-Whitney U with tied ranks averaged), not River's thresholded estimate.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from models.features import BASE_FEATURES, from_vector
from models.labels import ABANDONMENT, NEXT_STAGE, Sample
from models.training import TrainingState

EPS: Final = 1e-15
RECENCY_FEATURE: Final = "cart_idle_log_s"
_RECENCY_SLOT: Final = BASE_FEATURES.index(RECENCY_FEATURE)
Row = dict[str, Any]
Proba = Mapping[Any, float]


def canonical(samples: Iterable[Sample]) -> list[Sample]:
    """Samples deduplicated by id and sorted by `(resolved_at, id)`: independent of batching.

    A duplicate is a republished copy; if copies ever differed, the smallest JSON wins.
    """
    kept: dict[str, Sample] = {}
    for sample in samples:
        seen = kept.get(sample.id)
        if seen is None or sample.to_json() < seen.to_json():
            kept[sample.id] = sample
    return sorted(kept.values(), key=lambda s: (s.resolved_at, s.id))


def labels_digest(samples: Iterable[Sample]) -> str:
    """sha256 over the canonical samples' JSON, one per line: equal digests, equal labels."""
    digest = hashlib.sha256()
    for sample in canonical(samples):
        digest.update(sample.to_json() + b"\n")
    return digest.hexdigest()


def roc_auc(y: Sequence[bool], scores: Sequence[float]) -> float:
    """Exact ROC AUC: P(score of a positive > score of a negative), ties counting half.

    NaN when one class is absent.

    >>> roc_auc([False, True, True, False], [0.1, 0.9, 0.5, 0.5])
    0.875
    """
    positives = sum(map(bool, y))
    negatives = len(y) - positives
    if not positives or not negatives:
        return math.nan
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        average_rank = (i + j) / 2 + 1  # ranks start at 1; tied scores share their mean
        rank_sum += average_rank * sum(bool(y[k]) for k in order[i : j + 1])
        i = j + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def binary_log_loss(y: Sequence[bool], p: Sequence[float]) -> float:
    """Mean -log P(true label), with P(True) = p clipped to [1e-15, 1 - 1e-15]."""
    total = 0.0
    for label, prob in zip(y, p, strict=True):
        q = min(max(prob, EPS), 1 - EPS)
        total -= math.log(q if label else 1 - q)
    return total / len(y) if y else math.nan


def brier(y: Sequence[bool], p: Sequence[float]) -> float:
    """Mean squared difference between P(True) and the outcome (0 or 1)."""
    pairs = zip(y, p, strict=True)
    return sum((prob - float(label)) ** 2 for label, prob in pairs) / len(y) if y else math.nan


def accuracy(y: Sequence[Any], predicted: Sequence[Any]) -> float:
    hits = sum(a == b for a, b in zip(y, predicted, strict=True))
    return hits / len(y) if y else math.nan


def macro_f1(y: Sequence[Any], predicted: Sequence[Any]) -> float:
    """Unweighted mean F1 over every class that is a label or a prediction (as scikit-learn)."""
    classes = sorted(set(y) | set(predicted), key=str)
    if not classes:
        return math.nan
    scores: list[float] = []
    for c in classes:
        tp = sum(bool(a == c and b == c) for a, b in zip(y, predicted, strict=True))
        support = sum(a == c for a in y) + sum(b == c for b in predicted)
        scores.append(2 * tp / support)
    return sum(scores) / len(scores)


def multiclass_log_loss(y: Sequence[Any], probas: Sequence[Proba]) -> float:
    """Mean -log P(true label); a label missing from a prediction has P = 1e-15."""
    total = -sum(
        math.log(max(proba.get(label, 0.0), EPS)) for label, proba in zip(y, probas, strict=True)
    )
    return total / len(y) if y else math.nan


def binary_row(model: str, y: Sequence[bool], p: Sequence[float], **extra: Any) -> Row:
    """A report row for probabilities of `True`."""
    return {
        "model": model, "n": len(y), "positive_rate": _rate(y), "roc_auc": roc_auc(y, p),
        "log_loss": binary_log_loss(y, p), "brier": brier(y, p), **extra,
    }  # fmt: skip


def multiclass_row(model: str, y: Sequence[Any], probas: Sequence[Proba] | None,
                   predicted: Sequence[Any] | None = None, **extra: Any) -> Row:  # fmt: skip
    """A report row; `probas` None means a point predictor (`predicted`): no log loss.

    A tie goes to the first class in the prediction's order, as `OnlineModel.predict_one`.
    """
    if predicted is None:
        predicted = [max(p, key=p.__getitem__) if p else None for p in probas or []]
    return {
        "model": model, "n": len(y), "accuracy": accuracy(y, predicted),
        "macro_f1": macro_f1(y, predicted),
        "log_loss": multiclass_log_loss(y, probas) if probas is not None else None, **extra,
    }  # fmt: skip


def progressive_online(samples: Sequence[Sample], state: TrainingState) -> list[Proba]:
    """What `state` served for each sample just before learning it (progressive validation)."""
    served: list[Proba] = []
    for sample in samples:
        model = state.abandonment if sample.kind == ABANDONMENT else state.next_stage
        x = from_vector(sample.x, sample.stage)
        served.append(dict(model.predict_proba_one(x, stage=sample.stage)))
        state.learn(sample)
    return served


def progressive_fallback(samples: Sequence[Sample], fallback: Any) -> list[Proba]:
    """Same for a stage-only fallback (`PriorRate`, `MarkovChain`), on a copy of it."""
    fallback = copy.deepcopy(fallback)
    served: list[Proba] = []
    for sample in samples:
        served.append(dict(fallback.predict_proba_one(sample.stage)))
        fallback.learn_one(sample.label, sample.stage)
    return served


def recency_scores(samples: Sequence[Sample]) -> list[float]:
    """The heuristic abandonment score: log1p seconds since the cart last changed."""
    return [sample.x[_RECENCY_SLOT] for sample in samples]


def offline_ceiling(train: Sequence[Sample], test: Sequence[Sample], *, seed: int) -> list[Proba]:
    """LightGBM fitted with hindsight on `train`, scored on `test`; ImportError without it.

    Features are the recorded vector plus the stage as a categorical column. Abandonment is
    binary; next stage is multiclass over the labels seen in `train`.
    """
    lgb = importlib.import_module("lightgbm")
    np = importlib.import_module("numpy")
    stages = sorted({s.stage for s in (*train, *test)})
    classes = sorted({s.label for s in train}, key=str)

    def matrix(rows: Sequence[Sample]) -> Any:
        return np.array([[*s.x, float(stages.index(s.stage))] for s in rows], dtype=np.float64)

    params = {
        "objective": "multiclass" if len(classes) > 2 else "binary", "verbose": -1,
        "seed": seed, "deterministic": True, "num_threads": 1, "learning_rate": 0.05,
        "num_leaves": 15, "min_data_in_leaf": 5, "feature_fraction": 0.9,
    }  # fmt: skip
    if len(classes) > 2:
        params["num_class"] = len(classes)
    target = [classes.index(s.label) for s in train]
    data = lgb.Dataset(matrix(train), label=target, categorical_feature=[len(BASE_FEATURES)])
    booster = lgb.train(params, data, num_boost_round=200)
    raw = booster.predict(matrix(test))
    if len(classes) > 2:
        return [dict(zip(classes, map(float, row), strict=True)) for row in raw]
    return [{classes[1]: float(p), classes[0]: 1.0 - float(p)} for p in raw]


def evaluate(
    samples: Iterable[Sample], fresh: Callable[[], TrainingState], *, seed: int = 0
) -> dict[str, Any]:
    """The report: per task one row per model and baseline, on the canonical stream."""
    stream = canonical(samples)
    state = fresh()
    cold = fresh()
    served = dict(zip((s.id for s in stream), progressive_online(stream, state), strict=True))
    by_kind = {kind: [s for s in stream if s.kind == kind] for kind in (ABANDONMENT, NEXT_STAGE)}
    online = {kind: [served[s.id] for s in rows] for kind, rows in by_kind.items()}
    return {
        "labels_digest": labels_digest(stream),
        "samples": {kind: len(rows) for kind, rows in by_kind.items()},
        ABANDONMENT: _abandonment_rows(
            by_kind[ABANDONMENT], online[ABANDONMENT], cold.abandonment.fallback, seed
        ),
        NEXT_STAGE: _next_stage_rows(
            by_kind[NEXT_STAGE], online[NEXT_STAGE], cold.next_stage.fallback, seed
        ),
        "river_summary": state.summary(),
    }


def _abandonment_rows(samples: list[Sample], online: list[Proba], prior: Any, seed: int) -> Row:
    y = [bool(s.label) for s in samples]
    p_online = [float(p.get(True, 0.0)) for p in online]
    p_prior = [float(p[True]) for p in progressive_fallback(samples, prior)]
    scores = recency_scores(samples)
    rows = [
        binary_row("online", y, p_online),
        {**binary_row("prior_rate", y, p_prior), "roc_auc": 0.5},
        {**binary_row("recency_heuristic", y, scores), "log_loss": None, "brier": None},
    ]
    half = len(samples) // 2
    rows.append(binary_row("online", y[half:], p_online[half:], scope="second_half"))
    ceiling, note = _ceiling(samples, half, seed)
    if ceiling is not None:
        p = [float(q.get(True, 0.0)) for q in ceiling]
        rows.append(binary_row("lightgbm_offline", y[half:], p, scope="second_half"))
    return {"rows": [{"scope": "all", **r} for r in rows], "notes": _notes(ABANDONMENT, note)}


def _next_stage_rows(samples: list[Sample], online: list[Proba], chain: Any, seed: int) -> Row:
    y = [str(s.label) for s in samples]
    rows = [
        multiclass_row("online", y, online),
        multiclass_row("stay_in_stage", y, None, predicted=[s.stage for s in samples]),
        multiclass_row("markov_chain", y, progressive_fallback(samples, chain)),
    ]
    half = len(samples) // 2
    rows.append(multiclass_row("online", y[half:], online[half:], scope="second_half"))
    ceiling, note = _ceiling(samples, half, seed)
    if ceiling is not None:
        rows.append(multiclass_row("lightgbm_offline", y[half:], ceiling, scope="second_half"))
    return {"rows": [{"scope": "all", **r} for r in rows], "notes": _notes(NEXT_STAGE, note)}


def _ceiling(samples: list[Sample], half: int, seed: int) -> tuple[list[Proba] | None, str]:
    train, test = samples[:half], samples[half:]
    if len({s.label for s in train}) < 2 or not test:
        return None, "lightgbm_offline: skipped, the first half holds fewer than two labels"
    try:
        return offline_ceiling(train, test, seed=seed), ""
    except ImportError:
        return None, "lightgbm_offline: skipped, lightgbm is not installed (parcours[evaluate])"


def _notes(kind: str, extra: str) -> list[str]:
    notes = {
        ABANDONMENT: [
            "prior_rate: ROC AUC is 0.5 by construction (no per-sample ranking information)",
            f"recency_heuristic: score = {RECENCY_FEATURE}; a ranking only, so ROC AUC only",
        ],
        NEXT_STAGE: ["stay_in_stage: a point prediction, so log loss is undefined (null)"],
    }[kind]
    notes.append("second_half: fit on the first half by resolved_at, scored on the second")
    return [*notes, extra] if extra else notes


def _rate(y: Sequence[bool]) -> float:
    return sum(map(bool, y)) / len(y) if y else math.nan
