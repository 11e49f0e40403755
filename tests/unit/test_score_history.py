"""A journey's score history: a point only when the models' view changed, newest kept."""

from __future__ import annotations

from typing import Any

from models.predictions import RISK_STEP, remember
from models.state import JourneyState, ScorePoint, decode_state, encode_state


def _scores(at: int, odds: dict[str, float], risk: float | None = None) -> dict[str, Any]:
    return {
        "at": at,
        "abandonment": None if risk is None else {"risk": risk, "model_version": 3},
        "next_stage": {"probabilities": odds, "model_version": 4},
    }


def _state(stage: str = "awareness") -> JourneyState:
    return JourneyState("c", "retail", stage, 0, 0, 0)


def test_first_scores_are_a_point_with_the_most_likely_next_stage() -> None:
    state = _state()
    remember(state, _scores(10, {"consideration": 0.3, "decision": 0.7}))
    assert state.score_history == [ScorePoint(10, "awareness", "decision", 0.7, None)]


def test_unchanged_view_adds_nothing_and_each_kind_of_change_adds_a_point() -> None:
    state = _state()
    odds = {"consideration": 0.6, "decision": 0.4}
    remember(state, _scores(1, odds))
    remember(state, _scores(2, {"consideration": 0.55, "decision": 0.45}))  # same view
    assert len(state.score_history) == 1
    remember(state, _scores(3, odds, risk=0.2))  # a cart opened
    remember(state, _scores(4, odds, risk=0.2 + RISK_STEP / 2))  # too small a move
    remember(state, _scores(5, odds, risk=0.2 + 2 * RISK_STEP))  # a real move
    state.stage = "consideration"
    remember(state, _scores(6, odds, risk=0.25))  # the stage changed
    remember(state, _scores(7, {"consideration": 0.1, "decision": 0.9}, risk=0.25))
    remember(state, _scores(8, {"consideration": 0.1, "decision": 0.9}))  # the cart closed
    assert [p.at for p in state.score_history] == [1, 3, 5, 6, 7, 8]
    assert state.score_history[-1].risk is None
    assert state.score_history[-2] == ScorePoint(7, "consideration", "decision", 0.9, 0.25)


def test_only_the_newest_points_are_kept_and_older_views_are_ignored() -> None:
    state = _state()
    for at in range(20):
        remember(state, _scores(at, {"a": 0.5, "b": 0.5}, risk=at / 10), keep=5)
    assert [p.at for p in state.score_history] == [15, 16, 17, 18, 19]
    remember(state, _scores(3, {"a": 0.9, "b": 0.1}), keep=5)
    assert state.score_history[-1].at == 19


def test_ties_go_to_the_stage_named_first_and_history_survives_the_wire() -> None:
    state = _state()
    remember(state, _scores(1, {"decision": 0.5, "comparison": 0.5}, risk=0.4))
    assert state.score_history[0].next_stage == "comparison"
    again = decode_state(encode_state(state))
    assert again.score_history == state.score_history
    copy = state.copy()
    remember(copy, _scores(2, {"decision": 0.9, "comparison": 0.1}))
    assert len(state.score_history) == 1
    assert len(copy.score_history) == 2
