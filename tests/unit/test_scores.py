"""Scores over a lifetime and over a rolling window: River's values, forgetting exactly the
oldest outcomes, and the rolling score following a change the lifetime one dilutes."""

from __future__ import annotations

import doctest
import pickle
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import metrics, utils

import models.scores
from models.learners import abandonment_model, next_stage_model
from models.scores import BinaryScore, MulticlassScore, ThresholdROCAUC
from tests.unit.test_learners import abandonment_stream, next_stage_stream

CLASSES = ("comparison", "decision", "exit")
# Scores on River's thresholds, at 0 and 1, and anywhere between.
probabilities = st.one_of(
    st.sampled_from([0.0, 1.0, 0.5, 1 / 49, 48 / 49]), st.floats(0.0, 1.0, allow_nan=False)
)
binary_outcomes = st.lists(st.tuples(st.booleans(), probabilities), max_size=120)
multiclass_outcomes = st.lists(
    st.tuples(st.sampled_from(CLASSES), st.sampled_from(CLASSES), probabilities), max_size=120
)


def test_scores_docstring_examples_hold() -> None:
    result = doctest.testmod(models.scores)

    assert result.attempted > 0
    assert result.failed == 0


@settings(max_examples=80, deadline=None)
@given(outcomes=binary_outcomes, window=st.integers(1, 40))
def test_threshold_roc_auc_equals_rivers_roc_auc_lifetime_and_rolling(
    outcomes: list[tuple[bool, float]], window: int
) -> None:
    ours, rivers = ThresholdROCAUC(50), metrics.ROCAUC(n_thresholds=50)
    ours_rolling = utils.Rolling(ThresholdROCAUC, window_size=window)
    rivers_rolling = utils.Rolling(metrics.ROCAUC, window_size=window, n_thresholds=50)

    for y, p in outcomes:
        for metric in (ours, rivers, ours_rolling, rivers_rolling):
            metric.update(y, p)

        assert ours.get() == pytest.approx(rivers.get(), abs=1e-12)
        assert ours_rolling.get() == pytest.approx(rivers_rolling.get(), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(outcomes=binary_outcomes, window=st.integers(1, 40))
def test_rolling_binary_score_equals_a_fresh_score_of_the_last_outcomes(
    outcomes: list[tuple[bool, float]], window: int
) -> None:
    rolling = utils.Rolling(BinaryScore, window_size=window)
    last = BinaryScore()
    for outcome in outcomes:
        rolling.update(outcome)
    for outcome in outcomes[-window:]:
        last.update(outcome)

    got, want = rolling.obj.get(), last.get()
    assert got.keys() == want.keys()
    assert got == pytest.approx(want, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(outcomes=multiclass_outcomes, window=st.integers(1, 40))
def test_rolling_multiclass_score_equals_a_fresh_score_of_the_last_outcomes(
    outcomes: list[tuple[str, str, float]], window: int
) -> None:
    rolling = utils.Rolling(MulticlassScore, window_size=window)
    last = MulticlassScore()
    for outcome in outcomes:
        rolling.update(outcome)
    for outcome in outcomes[-window:]:
        last.update(outcome)

    assert rolling.obj.get() == pytest.approx(last.get(), abs=1e-9)


def test_rolling_binary_score_one_outcome_left_drops_roc_auc() -> None:
    rolling = utils.Rolling(BinaryScore, window_size=3)
    for outcome in [(False, 0.2), (True, 0.9), (True, 0.7), (True, 0.8), (True, 0.6)]:
        rolling.update(outcome)

    assert "roc_auc" not in rolling.obj.get()
    assert rolling.obj.get()["positive_rate"] == 1.0


def test_outcomes_keep_the_label_prediction_and_probabilities_scored() -> None:
    assert BinaryScore.outcome(True, {False: 0.3, True: 0.7}) == (True, 0.7)
    assert MulticlassScore.outcome("exit", {"decision": 0.6, "exit": 0.4}) == (
        "exit",
        "decision",
        0.4,
    )
    assert MulticlassScore.outcome("exit", {"decision": 1.0}) == ("exit", "decision", 0.0)
    assert MulticlassScore.outcome("exit", {}) is None


def _flipped(
    stream: list[tuple[dict[str, float], bool, str]],
) -> list[tuple[dict[str, float], bool, str]]:
    return [(x, not y, stage) for x, y, stage in stream]


def test_online_model_label_relation_flips_rolling_drops_lifetime_stays_high() -> None:
    model = abandonment_model(min_samples=50, quality_window=300)
    data = list(abandonment_stream(3000, seed=4))
    for x, y, stage in data[:2700]:
        model.learn_one(x, y, stage=stage)
    before = model.rolling_metrics()["roc_auc"]

    for x, y, stage in _flipped(data[2700:]):
        model.learn_one(x, y, stage=stage)

    lifetime, rolling = model.metrics()["roc_auc"], model.rolling_metrics()["roc_auc"]
    assert before > 0.9
    assert lifetime > 0.85
    assert rolling < lifetime - 0.2
    assert model.rolling_samples == model.quality_window == 300


def test_online_model_next_stage_shift_rolling_accuracy_drops_below_lifetime() -> None:
    model = next_stage_model(min_samples=50, quality_window=200, classes=CLASSES)
    data = list(next_stage_stream(2200, seed=3))
    swap = {"comparison": "decision", "decision": "exit", "exit": "comparison"}
    for x, y, stage in data[:2000]:
        model.learn_one(x, y, stage=stage)
    for x, y, stage in data[2000:]:
        model.learn_one(x, swap[y], stage=stage)

    lifetime, rolling = model.metrics(), model.rolling_metrics()
    assert lifetime["accuracy"] > 0.7
    assert rolling["accuracy"] < lifetime["accuracy"] - 0.3
    assert rolling["log_loss"] > lifetime["log_loss"]


def test_online_model_fewer_samples_than_window_rolling_equals_lifetime() -> None:
    model = abandonment_model(min_samples=20, quality_window=500)
    for x, y, stage in abandonment_stream(300):
        model.learn_one(x, y, stage=stage)

    assert model.rolling_samples == 300
    assert model.rolling_metrics() == pytest.approx(model.metrics(), abs=1e-12)
    assert abandonment_model(quality_window=500).rolling_metrics() == {}  # nothing scored yet


def test_online_model_resized_window_keeps_the_newest_outcomes() -> None:
    model = abandonment_model(min_samples=20, quality_window=400)
    narrow = abandonment_model(min_samples=20, quality_window=150)
    for x, y, stage in abandonment_stream(1000, seed=2):
        model.learn_one(x, y, stage=stage)
        narrow.learn_one(x, y, stage=stage)

    model.set_quality_window(150)

    assert model.quality_window == 150
    assert model.rolling_samples == 150
    assert model.rolling_metrics() == pytest.approx(narrow.rolling_metrics(), abs=1e-12)
    model.set_quality_window(600)  # widening keeps what there is and fills up from now on
    assert model.rolling_samples == 150
    assert model.metrics() == narrow.metrics()


def test_online_model_pickled_with_its_window_continues_identically() -> None:
    model = next_stage_model(min_samples=20, quality_window=100, classes=CLASSES)
    data = list(next_stage_stream(400, seed=5))
    for x, y, stage in data[:250]:
        model.learn_one(x, y, stage=stage)

    loaded = pickle.loads(pickle.dumps(model, protocol=5))
    for m in (model, loaded):
        for x, y, stage in data[250:]:
            m.learn_one(x, y, stage=stage)

    assert loaded.rolling_samples == 100
    assert loaded.rolling_metrics() == model.rolling_metrics()
    assert loaded.metrics() == model.metrics()


def test_online_model_pickled_before_rolling_metrics_loads_with_an_empty_window() -> None:
    model = abandonment_model(min_samples=20)
    data = list(abandonment_stream(200))
    for x, y, stage in data[:100]:
        model.learn_one(x, y, stage=stage)
    del model._rolling  # what a snapshot from before the rolling metrics holds

    loaded = pickle.loads(pickle.dumps(model, protocol=5))
    assert loaded.rolling_samples == 0
    assert loaded.rolling_metrics() == {}
    assert loaded.metrics() == model.metrics()
    for x, y, stage in data[100:]:
        loaded.learn_one(x, y, stage=stage)

    assert loaded.rolling_samples == 100
    assert loaded.samples_seen == 200


def test_online_model_window_below_one_refused() -> None:
    with pytest.raises(ValueError, match="quality_window"):
        abandonment_model(quality_window=0)


def test_threshold_roc_auc_random_stream_matches_river_after_many_reverts() -> None:
    rng = random.Random(11)
    ours = utils.Rolling(ThresholdROCAUC, window_size=500)
    rivers = utils.Rolling(metrics.ROCAUC, window_size=500, n_thresholds=50)
    for _ in range(5000):
        p = rng.random()
        y = rng.random() < p
        ours.update(y, p)
        rivers.update(y, p)

    assert 0.6 < ours.get() < 0.95
    assert ours.get() == pytest.approx(rivers.get(), abs=1e-12)
