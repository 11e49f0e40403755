"""Evaluation metrics against hand-computed values, baselines on tiny streams, canonical order."""

from __future__ import annotations

import math
import random

import pytest

from models.evaluation import (
    accuracy,
    binary_log_loss,
    brier,
    canonical,
    evaluate,
    labels_digest,
    macro_f1,
    multiclass_log_loss,
    progressive_fallback,
    recency_scores,
    roc_auc,
)
from models.features import BASE_FEATURES
from models.labels import ABANDONMENT, NEXT_STAGE, Label, Sample
from models.learners import MarkovChain, PriorRate
from models.training import TrainingState, new_training_state

STAGES = ["awareness", "consideration", "decision"]
IDLE = BASE_FEATURES.index("cart_idle_log_s")


def sample(i: int, kind: str, label: Label, *, stage: str = "awareness", idle: float = 0.0,
           resolved_at: int | None = None) -> Sample:  # fmt: skip
    x = [0.0] * len(BASE_FEATURES)
    x[IDLE] = idle
    return Sample(
        id=f"{kind[0]}:c{i}:{i}", kind=kind, customer_id=f"c{i}",  # type: ignore[arg-type]
        journey_map="retail", at=i, resolved_at=i if resolved_at is None else resolved_at,
        stage=stage, x=x, label=label,
    )  # fmt: skip


def fresh() -> TrainingState:
    return new_training_state(STAGES, min_samples=5)


def test_roc_auc_with_ties_counts_half() -> None:
    # pairs (pos, neg): (0.9,0.1) 1, (0.9,0.5) 1, (0.5,0.1) 1, (0.5,0.5) 0.5 -> 3.5 / 4
    assert roc_auc([False, True, True, False], [0.1, 0.9, 0.5, 0.5]) == 0.875


def test_roc_auc_perfect_inverted_and_constant() -> None:
    assert roc_auc([False, False, True], [0.1, 0.2, 0.3]) == 1.0
    assert roc_auc([False, False, True], [0.3, 0.2, 0.1]) == 0.0
    assert roc_auc([False, True, True], [0.4, 0.4, 0.4]) == 0.5


def test_roc_auc_one_class_is_nan() -> None:
    assert math.isnan(roc_auc([True, True], [0.1, 0.2]))


def test_roc_auc_matches_pairwise_count_on_random_scores() -> None:
    rng = random.Random(3)
    y = [rng.random() < 0.3 for _ in range(200)]
    scores = [round(rng.random(), 1) for _ in y]  # many ties
    pos = [s for s, label in zip(scores, y, strict=True) if label]
    neg = [s for s, label in zip(scores, y, strict=True) if not label]
    pairs = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    assert roc_auc(y, scores) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_binary_log_loss_hand_computed_and_clipped() -> None:
    # -(ln 0.8 + ln 0.6) / 2 = 0.3669...
    assert binary_log_loss([True, False], [0.8, 0.4]) == pytest.approx(0.366985, abs=1e-6)
    assert binary_log_loss([True], [0.0]) == pytest.approx(-math.log(1e-15))


def test_brier_hand_computed() -> None:
    # ((0.8 - 1)^2 + (0.4 - 0)^2) / 2 = (0.04 + 0.16) / 2
    assert brier([True, False], [0.8, 0.4]) == pytest.approx(0.1)


def test_accuracy_and_macro_f1_hand_computed() -> None:
    y = ["a", "a", "b", "c"]
    predicted = ["a", "b", "b", "b"]
    # F1: a = 2*1/(2+1) = 2/3, b = 2*1/(1+3) = 1/2, c = 0 -> mean 7/18
    assert accuracy(y, predicted) == 0.5
    assert macro_f1(y, predicted) == pytest.approx(7 / 18)


def test_multiclass_log_loss_missing_label_counts_as_clip() -> None:
    probas = [{"a": 0.5, "b": 0.5}, {"a": 1.0}]
    expected = (math.log(2) - math.log(1e-15)) / 2
    assert multiclass_log_loss(["a", "b"], probas) == pytest.approx(expected)


def test_canonical_dedupes_and_orders_whatever_the_arrival_order() -> None:
    stream = [sample(i, NEXT_STAGE, "exit", resolved_at=10 - i % 3) for i in range(9)]
    shuffled = stream[::-1] + stream[:4]
    random.Random(1).shuffle(shuffled)

    ordered = canonical(shuffled)

    assert ordered == canonical(stream)
    assert len(ordered) == 9
    assert [(s.resolved_at, s.id) for s in ordered] == sorted((s.resolved_at, s.id) for s in stream)
    assert labels_digest(shuffled) == labels_digest(stream)


def test_labels_digest_changes_with_a_label() -> None:
    stream = [sample(i, ABANDONMENT, i % 2 == 0) for i in range(4)]
    changed = [*stream[:3], sample(3, ABANDONMENT, True)]
    assert labels_digest(stream) != labels_digest(changed)


def test_prior_baseline_is_the_progressive_smoothed_rate() -> None:
    stream = [sample(i, ABANDONMENT, label) for i, label in enumerate([True, True, False])]
    served = progressive_fallback(stream, PriorRate())
    assert [p[True] for p in served] == pytest.approx([1 / 2, 2 / 3, 3 / 4])


def test_markov_baseline_learns_transitions_with_laplace_smoothing() -> None:
    stream = [sample(i, NEXT_STAGE, "decision", stage="consideration") for i in range(2)]
    served = progressive_fallback(stream, MarkovChain([*STAGES, "exit"]))
    assert served[0]["decision"] == pytest.approx(1 / 4)
    assert served[1]["decision"] == pytest.approx(2 / 5)  # (1 + 1) / (1 + 4)


def test_recency_heuristic_scores_cart_idle() -> None:
    stream = [sample(0, ABANDONMENT, False, idle=0.5), sample(1, ABANDONMENT, True, idle=7.0)]
    assert recency_scores(stream) == [0.5, 7.0]


def synthetic_stream(n: int = 120) -> list[Sample]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        idle = rng.uniform(0, 8)
        out.append(sample(2 * i, ABANDONMENT, idle + rng.gauss(0, 1) > 4, idle=idle))
        stage = rng.choice(STAGES)
        nxt = STAGES[min(STAGES.index(stage) + 1, 2)] if rng.random() < 0.7 else "exit"
        out.append(sample(2 * i + 1, NEXT_STAGE, nxt, stage=stage))
    return out


def test_evaluate_rows_for_every_model_and_baseline() -> None:
    report = evaluate(synthetic_stream(), fresh, seed=1)

    assert report["samples"] == {ABANDONMENT: 120, NEXT_STAGE: 120}
    models = {(r["model"], r["scope"]) for r in report[ABANDONMENT]["rows"]}
    assert {("online", "all"), ("prior_rate", "all"), ("recency_heuristic", "all"),
            ("online", "second_half")} <= models  # fmt: skip
    by_model = {r["model"]: r for r in report[ABANDONMENT]["rows"] if r["scope"] == "all"}
    assert by_model["prior_rate"]["roc_auc"] == 0.5
    assert by_model["recency_heuristic"]["roc_auc"] > 0.8  # the label was built from it
    stages = {r["model"]: r for r in report[NEXT_STAGE]["rows"] if r["scope"] == "all"}
    assert stages["stay_in_stage"]["log_loss"] is None
    assert stages["markov_chain"]["accuracy"] > stages["stay_in_stage"]["accuracy"]


def test_evaluate_is_deterministic_and_order_independent() -> None:
    stream = synthetic_stream()
    shuffled = stream[::-1] + stream[:10]

    first, second = evaluate(stream, fresh, seed=1), evaluate(shuffled, fresh, seed=1)

    assert first == second


def test_online_figures_equal_the_training_states_own_metrics() -> None:
    stream = synthetic_stream()
    report = evaluate(stream, fresh)
    online = next(r for r in report[NEXT_STAGE]["rows"] if r["model"] == "online")
    river = report["river_summary"][NEXT_STAGE]["metrics"]
    assert online["accuracy"] == pytest.approx(river["accuracy"])
    assert online["log_loss"] == pytest.approx(river["log_loss"])
