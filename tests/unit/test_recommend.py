"""Composing recommendation actions: when each type appears, what it carries, and the order."""

from __future__ import annotations

from typing import Any

import pytest

from models.fold import Fold
from models.journeymap import JourneyMap
from models.recommend import (
    ACTION_TYPES,
    CONTEXTS,
    PRIORITIES,
    REASONS,
    Accessory,
    Action,
    Candidates,
    Policy,
    Scores,
    action_type_of,
    recommend,
    recommendation_id,
)
from models.state import JourneyState
from tests.unit.conftest import make_event, ms

POLICY = Policy(risk_threshold=0.5, idle_cart_ms=30 * 60_000)
CANDIDATES = Candidates(
    accessories=[
        Accessory("case", 0.8, "phone", "cart"),
        Accessory("charger", 0.5, "phone", "cart"),
        Accessory("strap", 0.2, "watch", "bought"),
    ],
    trending=[("tv", 40.0), ("case", 30.0), ("radio", 10.0)],
    category="audio",
    trending_in_category=[("speaker", 8.0), ("tv", 4.0)],
)


def journey(fold: Fold, *events: dict[str, Any]) -> JourneyState:
    state = fold.fold(None, [(make_event(**e), None) for e in events])
    assert state is not None
    return state


def carted(fold: Fold) -> JourneyState:
    return journey(
        fold,
        {"type": "product_view", "properties": {"product_id": "phone"}},
        {
            "type": "add_to_cart",
            "minutes": 1,
            "properties": {"product_id": "phone", "price": 300.0, "category": "phones"},
        },
    )


def types(actions: list[Action]) -> list[str]:
    return [a.type for a in actions]


def test_open_cart_above_risk_threshold_gets_a_reminder_with_cart_and_channel(
    fold: Fold, retail_map: JourneyMap
) -> None:
    state = carted(fold)

    actions = recommend(
        state, ms(2), retail_map, CANDIDATES, scores=Scores(risk=0.7), context="cart", policy=POLICY
    )

    reminder = actions[0]
    assert reminder.type == "abandoned_cart_reminder"
    assert reminder.reason == "cart_at_risk"
    assert reminder.score == 0.7
    assert [i.product_id for i in reminder.items] == ["phone"]
    assert reminder.items[0].price == 300.0
    assert reminder.details["cart_value"] == 300.0
    assert reminder.details["last_channel"] == "web"


def test_low_risk_fresh_cart_gets_no_reminder(fold: Fold, retail_map: JourneyMap) -> None:
    state = carted(fold)

    actions = recommend(
        state, ms(2), retail_map, CANDIDATES, scores=Scores(risk=0.2), context="cart", policy=POLICY
    )

    assert "abandoned_cart_reminder" not in types(actions)


def test_idle_cart_gets_a_reminder_even_at_low_risk(fold: Fold, retail_map: JourneyMap) -> None:
    state = carted(fold)

    actions = recommend(
        state, ms(1 + 30), retail_map, CANDIDATES, scores=Scores(risk=0.2), policy=POLICY
    )

    reminder = next(a for a in actions if a.type == "abandoned_cart_reminder")
    assert reminder.reason == "cart_idle"
    assert reminder.details["idle_ms"] == 30 * 60_000


def test_purchase_closes_the_cart_so_no_reminder(fold: Fold, retail_map: JourneyMap) -> None:
    state = journey(
        fold,
        {"type": "add_to_cart", "properties": {"product_id": "phone", "price": 300.0}},
        {"type": "purchase", "minutes": 2, "properties": {"order_id": "o1", "price": 300.0}},
    )

    actions = recommend(state, ms(120), retail_map, CANDIDATES, scores=Scores(risk=0.99))

    assert "abandoned_cart_reminder" not in types(actions)


def test_next_best_action_follows_the_predicted_next_stage(
    fold: Fold, retail_map: JourneyMap
) -> None:
    state = carted(fold)
    assert state.stage == "decision"

    to_purchase = recommend(
        state, ms(2), retail_map, Candidates(), scores=Scores(next_stage={"purchase": 0.6})
    )
    staying = recommend(
        state, ms(2), retail_map, Candidates(), scores=Scores(next_stage={"decision": 0.9})
    )

    assert to_purchase[0].details["action"] == "checkout_reassurance"
    assert to_purchase[0].reason == "predicted_next_stage_action"
    assert to_purchase[0].score == 0.6
    assert staying[0].details["action"] == "free_shipping_offer"
    assert staying[0].reason == "stage_action"
    assert staying[0].details["predicted_next_stage"] is None


def test_unknown_customer_gets_the_cold_start_answer(retail_map: JourneyMap) -> None:
    actions = recommend(None, ms(0), retail_map, Candidates(trending=[("tv", 3.0)]))

    assert types(actions) == ["next_best_action", "trending"]
    assert actions[0].reason == "cold_start"
    assert actions[0].details["stage"] == "awareness"
    assert actions[0].details["action"] == "welcome_content"
    assert actions[1].items[0].product_id == "tv"


def test_trending_prefers_the_category_and_skips_accessories_and_repeats(
    retail_map: JourneyMap,
) -> None:
    actions = recommend(None, ms(0), retail_map, CANDIDATES, limit=20)

    trending = [(a.items[0].product_id, a.reason, a.score) for a in actions if a.type == "trending"]
    assert trending == [
        ("speaker", "trending_in_category", 1.0),
        ("tv", "trending_in_category", 0.5),
        ("radio", "trending_overall", 0.25),
    ]


def test_accessories_carry_their_seed_and_reason(retail_map: JourneyMap) -> None:
    actions = recommend(None, ms(0), retail_map, CANDIDATES, context="product_page")

    accessories = [a for a in actions if a.type == "accessory"]
    assert [(a.items[0].product_id, a.reason, a.details["seed"]) for a in accessories] == [
        ("case", "bought_with_cart_item", "phone"),
        ("charger", "bought_with_cart_item", "phone"),
        ("strap", "complements_past_purchase", "watch"),
    ]


@pytest.mark.parametrize("context", CONTEXTS)
def test_small_limit_mixes_types_in_the_context_order(
    fold: Fold, retail_map: JourneyMap, context: Any
) -> None:
    state = carted(fold)

    actions = recommend(
        state, ms(2), retail_map, CANDIDATES, scores=Scores(risk=0.9), context=context, limit=4
    )

    assert types(actions) == list(PRIORITIES[context])


def test_limit_fills_with_the_highest_priority_type_first(
    fold: Fold, retail_map: JourneyMap
) -> None:
    state = carted(fold)

    actions = recommend(
        state, ms(2), retail_map, CANDIDATES, scores=Scores(risk=0.9), context="cart", limit=6
    )

    assert types(actions) == [
        "abandoned_cart_reminder",
        "accessory",
        "accessory",
        "accessory",
        "next_best_action",
        "trending",
    ]


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 8, 50])
def test_answer_never_exceeds_limit_and_scores_stay_in_unit_interval(
    fold: Fold, retail_map: JourneyMap, limit: int
) -> None:
    actions = recommend(carted(fold), ms(90), retail_map, CANDIDATES, limit=limit)

    assert len(actions) <= limit
    assert all(0.0 <= a.score <= 1.0 for a in actions)
    assert {a.reason for a in actions} <= set(REASONS)
    assert {a.type for a in actions} <= set(ACTION_TYPES)


def test_recommendation_ids_name_their_type_back() -> None:
    rec_id = recommendation_id("accessory", "r-42", 3)

    assert rec_id == "accessory:r-42:3"
    assert action_type_of(rec_id) == "accessory"
    assert action_type_of("banner:r-1:0") == "unknown"
    assert action_type_of("no-colon") == "unknown"
