"""Online models: fallback then pipeline, progressive validation, and River-style conformance."""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Iterator
from typing import Any

import pytest

from models.journeymap import EXIT
from models.learners import (
    FALLBACK_VERSION,
    PIPELINES,
    MarkovChain,
    OnlineModel,
    PriorRate,
    abandonment_model,
    next_stage_model,
)

STAGES = ("consideration", "comparison", "decision")
CANDIDATES = [(task, name) for task, names in PIPELINES.items() for name in names]


def abandonment_stream(n: int, seed: int = 1) -> Iterator[tuple[dict[str, float], bool, str]]:
    """Carts idle for long are abandoned (with 5% label noise); other features are noise."""
    rng = random.Random(seed)
    for _ in range(n):
        idle = rng.uniform(0, 8)
        x = {
            "cart_idle_log_s": idle,
            "cart_value_log": rng.uniform(0, 6),
            "count_product_view_log": rng.uniform(0, 3),
            f"stage={rng.choice(STAGES)}": 1.0,
        }
        y = (idle > 4) != (rng.random() < 0.05)
        yield x, y, "decision"


def next_stage_stream(n: int, seed: int = 1) -> Iterator[tuple[dict[str, float], str, str]]:
    """The next stage is whichever of three signals is strongest; the current stage is noise."""
    rng = random.Random(seed)
    targets = ("comparison", "decision", EXIT)
    for _ in range(n):
        signals = [rng.gauss(0, 1) for _ in targets]
        stage = rng.choice(STAGES)
        x = {f"signal_{i}": s for i, s in enumerate(signals)}
        x[f"stage={stage}"] = 1.0
        yield x, targets[signals.index(max(signals))], stage


def model_for(task: str, name: str, **params: Any) -> OnlineModel[Any]:
    if task == "abandonment":
        return abandonment_model(pipeline=name, **params)
    return next_stage_model(pipeline=name, **params)


def stream_for(task: str, n: int) -> Iterator[tuple[dict[str, float], Any, str]]:
    return abandonment_stream(n) if task == "abandonment" else next_stage_stream(n)


def test_prior_rate_labels_seen_gives_beta_smoothed_rate() -> None:
    prior = PriorRate()
    assert prior.predict_proba_one("decision") == {False: 0.5, True: 0.5}

    for y in (True, True, False):
        prior.learn_one(y, "decision")

    assert prior.predict_proba_one("decision")[True] == pytest.approx(3 / 5)


def test_markov_chain_transitions_seen_gives_laplace_smoothed_rows() -> None:
    chain = MarkovChain(["a", "b"])
    chain.learn_one("a", "s1")
    chain.learn_one("a", "s1")
    chain.learn_one("c", "s2")

    assert chain.predict_proba_one("s1") == pytest.approx({"a": 3 / 5, "b": 1 / 5, "c": 1 / 5})
    assert chain.predict_proba_one("s2") == pytest.approx({"a": 1 / 4, "b": 1 / 4, "c": 2 / 4})
    assert chain.predict_proba_one("never") == pytest.approx(dict.fromkeys("abc", 1 / 3))


def test_online_model_below_min_samples_serves_fallback_then_pipeline() -> None:
    model = abandonment_model(min_samples=50)
    data = list(abandonment_stream(60))
    for x, y, stage in data[:49]:
        model.learn_one(x, y, stage=stage)
    x_probe = data[0][0]

    assert model.version == FALLBACK_VERSION
    assert model.predict_proba_one(x_probe, stage="decision") == model.fallback.predict_proba_one(
        "decision"
    )
    assert model.explain(x_probe, stage="decision") == []

    model.learn_one(*data[49][:2], stage="decision")
    model.version = "abandonment-v17"

    assert model.samples_seen == 50
    assert model.version == "abandonment-v17"
    served = model.predict_proba_one(x_probe, stage="decision")
    assert served[True] == pytest.approx(model.pipeline.predict_proba_one(x_probe)[True])
    assert served[True] + served[False] == pytest.approx(1.0)


def test_online_model_cold_first_sample_scored_with_prior() -> None:
    model = abandonment_model(min_samples=10)
    x, _, stage = next(abandonment_stream(1))

    model.learn_one(x, True, stage=stage)

    assert model.metrics()["log_loss"] == pytest.approx(math.log(2))
    assert model.metrics()["brier"] == pytest.approx(0.25)
    assert model.metrics()["positive_rate"] == 1.0


def test_online_model_warm_first_sample_scored_before_learning() -> None:
    model = abandonment_model(min_samples=0, learning_rate=0.5)
    trained = abandonment_model(min_samples=0, learning_rate=0.5)
    x, _, stage = next(abandonment_stream(1))
    untrained = model.predict_proba_one(x, stage=stage)[True]

    model.learn_one(x, True, stage=stage)
    trained.learn_one(x, True, stage=stage)

    assert model.metrics()["log_loss"] == pytest.approx(-math.log(untrained))
    assert trained.predict_proba_one(x, stage=stage)[True] > untrained


def test_online_model_first_multiclass_sample_scored_before_learning() -> None:
    model = next_stage_model(min_samples=5, classes=["comparison", "decision"])
    x, _, stage = next(next_stage_stream(1))

    model.learn_one(x, "decision", stage=stage)

    assert model.metrics()["log_loss"] == pytest.approx(math.log(2))


@pytest.mark.parametrize(("task", "name"), CANDIDATES)
def test_online_model_learn_one_leaves_input_unchanged(task: str, name: str) -> None:
    model = model_for(task, name, min_samples=5)
    for x, y, stage in stream_for(task, 20):
        before = copy.deepcopy(x)
        model.learn_one(x, y, stage=stage)
        model.predict_proba_one(x, stage=stage)
        model.explain(x, stage=stage)
        assert x == before


@pytest.mark.parametrize(("task", "name"), CANDIDATES)
def test_online_model_unseen_or_missing_features_predict_distribution(task: str, name: str) -> None:
    model = model_for(task, name, min_samples=5)
    for x, y, stage in stream_for(task, 30):
        model.learn_one(x, y, stage=stage)

    for probe in ({}, {"never_seen": 3.0}, {"stage=elsewhere": 1.0, "cart_idle_log_s": 9.0}):
        proba = model.predict_proba_one(probe, stage="decision")
        assert sum(proba.values()) == pytest.approx(1.0)
        assert all(0.0 <= p <= 1.0 for p in proba.values())
    model.learn_one({"never_seen": 1.0}, next(stream_for(task, 1))[1], stage="decision")
    assert model.samples_seen == 31


@pytest.mark.parametrize(("task", "name"), CANDIDATES)
def test_online_model_same_stream_twice_gives_identical_metrics(task: str, name: str) -> None:
    runs = []
    for _ in range(2):
        model = model_for(task, name, min_samples=20)
        for x, y, stage in stream_for(task, 300):
            model.learn_one(x, y, stage=stage)
        probe = next(stream_for(task, 1))[0]
        runs.append((model.metrics(), model.predict_proba_one(probe, stage="decision")))

    assert runs[0] == runs[1]


def test_abandonment_model_separable_stream_auc_beats_prior() -> None:
    model = abandonment_model(min_samples=100)
    prior_only = abandonment_model(min_samples=10**9)
    for x, y, stage in abandonment_stream(2000):
        model.learn_one(x, y, stage=stage)
        prior_only.learn_one(x, y, stage=stage)

    assert model.metrics()["roc_auc"] > 0.8
    assert prior_only.metrics()["roc_auc"] < 0.6
    assert model.metrics()["log_loss"] < prior_only.metrics()["log_loss"]
    assert model.metrics()["brier"] < prior_only.metrics()["brier"]
    assert 0.45 < model.metrics()["positive_rate"] < 0.55


def test_next_stage_model_feature_determined_stream_accuracy_beats_markov() -> None:
    model = next_stage_model(min_samples=100)
    markov_only = next_stage_model(min_samples=10**9)
    for x, y, stage in next_stage_stream(2000):
        model.learn_one(x, y, stage=stage)
        markov_only.learn_one(x, y, stage=stage)

    assert model.metrics()["accuracy"] > 0.75
    assert markov_only.metrics()["accuracy"] < 0.45
    assert model.metrics()["macro_f1"] > markov_only.metrics()["macro_f1"] + 0.3
    assert model.metrics()["log_loss"] < markov_only.metrics()["log_loss"]


def test_next_stage_model_given_classes_fallback_spreads_over_all() -> None:
    model = next_stage_model(classes=[*STAGES, EXIT])

    proba = model.predict_proba_one({}, stage="decision")

    assert proba == pytest.approx(dict.fromkeys([*STAGES, EXIT], 0.25))
    assert model.predict_one({}, stage="decision") == STAGES[0]


def test_online_model_no_class_known_skips_scoring() -> None:
    model = next_stage_model(min_samples=10)

    model.learn_one({"a": 1.0}, "decision", stage="comparison")

    assert model.predict_one({}, stage="x") == "decision"
    assert model.metrics() == {"accuracy": 0.0, "macro_f1": 0.0, "log_loss": 0.0}


def test_explain_logreg_top_term_is_the_signal_with_its_sign() -> None:
    model = abandonment_model(min_samples=50)
    for x, y, stage in abandonment_stream(1000):
        model.learn_one(x, y, stage=stage)

    idle = model.explain({"cart_idle_log_s": 7.5, "cart_value_log": 3.0}, stage="decision")
    active = model.explain({"cart_idle_log_s": 0.5, "cart_value_log": 3.0}, stage="decision")

    assert idle[0][0] == "cart_idle_log_s"
    assert idle[0][1] > 0 > active[0][1]
    assert len(model.explain(next(abandonment_stream(1))[0], stage="decision", top=2)) == 2


@pytest.mark.parametrize("name", ["ovr_logreg", "softmax"])
def test_explain_multiclass_linear_explains_predicted_class(name: str) -> None:
    model = next_stage_model(pipeline=name, min_samples=50)
    for x, y, stage in next_stage_stream(1000):
        model.learn_one(x, y, stage=stage)
    probe = {"signal_0": 0.0, "signal_1": 0.0, "signal_2": 3.0, "stage=decision": 1.0}

    terms = model.explain(probe, stage="decision", top=3)

    assert model.predict_one(probe, stage="decision") == EXIT
    assert terms[0][0] == "signal_2"
    assert terms[0][1] > 0


def test_explain_hoeffding_tree_returns_empty() -> None:
    model = abandonment_model(pipeline="hoeffding_tree", min_samples=10)
    for x, y, stage in abandonment_stream(50):
        model.learn_one(x, y, stage=stage)

    assert model.version != FALLBACK_VERSION
    assert model.explain(next(abandonment_stream(1))[0], stage="decision") == []


def test_factories_unknown_pipeline_raises_value_error_naming_choices() -> None:
    with pytest.raises(ValueError, match="hoeffding_tree"):
        abandonment_model(pipeline="deep_net")
    with pytest.raises(ValueError, match="softmax"):
        next_stage_model(pipeline="logreg")
    with pytest.raises(ValueError, match="min_samples"):
        abandonment_model(min_samples=-1)


def test_abandonment_metrics_one_outcome_seen_leave_roc_auc_undefined() -> None:
    model = abandonment_model(min_samples=0)
    for i in range(20):
        model.learn_one({"a": float(i)}, False, stage="decision")

    assert "roc_auc" not in model.metrics()
    model.learn_one({"a": 3.0}, True, stage="decision")
    assert 0.0 <= model.metrics()["roc_auc"] <= 1.0
