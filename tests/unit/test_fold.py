"""The fold `state + event -> state`: journey, cart, purchases, sessions, bounds, idempotence."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.events import CANONICAL_TYPES, PRODUCT_TYPES, Channel, Event
from models.fold import DIGEST_WIDTH, Fold, Limits, Position
from models.journeymap import JourneyMap
from models.state import (
    JourneyState,
    RecentProduct,
    StageVisit,
    Touchpoint,
    decode_state,
    encode_state,
)

MakeEvent = Callable[..., Event]
Ms = Callable[[float], int]


def run(fold: Fold, events: Iterable[Event], state: JourneyState | None = None) -> JourneyState:
    """Fold events without positions; the state after the last."""
    final = fold.fold(state, ((event, None) for event in events))
    assert final is not None
    return final


def product(pid: str, **more: Any) -> dict[str, Any]:
    return {"product_id": pid, **more}


# --- journey ------------------------------------------------------------------------------


def test_fold_leaves_are_complete_named_tuples(fold: Fold, make_event: MakeEvent) -> None:
    # The fold builds leaves with tuple.__new__ (no arity check): every field must be there.
    state = run(
        fold,
        [
            make_event(minutes=0, type="page_view", properties={"url": "https://x.example/"}),
            make_event(minutes=1, type="product_view", properties=product("p1")),
        ],
    )

    assert state.touchpoints == [
        Touchpoint("page_view", "web", state.first_event_at, None, "https://x.example/"),
        Touchpoint("product_view", "web", state.last_event_at, "p1", None),
    ]
    assert [type(v) for v in state.stage_history] == [StageVisit, StageVisit]
    assert all(len(v) == len(StageVisit._fields) for v in state.stage_history)


def test_fold_retail_walk_through_moves_stage_after_each_event(
    fold: Fold, make_event: MakeEvent, ms: Ms
) -> None:
    week = 7 * 24 * 60

    def shoe(pid: str, minutes: int) -> Event:
        return make_event(
            minutes=minutes, type="product_view", properties=product(pid, category="shoes")
        )

    steps = [
        (make_event(minutes=0, type="page_view"), "awareness"),
        (shoe("p1", 1), "consideration"),
        (shoe("p2", 2), "consideration"),
        (shoe("p3", 3), "comparison"),
        (
            make_event(minutes=4, type="add_to_cart", properties=product("p3", price=80.0)),
            "decision",
        ),
        (make_event(minutes=5, type="purchase", properties={"order_id": "o1"}), "purchase"),
        (
            make_event(
                minutes=week, type="purchase", properties=product("p9", price=20.0, order_id="o2")
            ),
            "loyalty",
        ),
        (make_event(minutes=week + 5, type="review_written"), "advocacy"),
    ]

    state: JourneyState | None = None
    for event, expected in steps:
        state = fold.apply(state, event)
        assert state.stage == expected, event.type
    assert state is not None

    assert state.stage_history == [
        StageVisit("awareness", ms(0), "page_view"),
        StageVisit("consideration", ms(1), "product_view"),
        StageVisit("comparison", ms(3), "product_view"),
        StageVisit("decision", ms(4), "add_to_cart"),
        StageVisit("purchase", ms(5), "purchase"),
        StageVisit("loyalty", ms(week), "purchase"),
        StageVisit("advocacy", ms(week + 5), "review_written"),
    ]
    assert state.stage_first_entered == {
        "awareness": ms(0),
        "consideration": ms(1),
        "comparison": ms(3),
        "decision": ms(4),
        "purchase": ms(5),
        "loyalty": ms(week),
        "advocacy": ms(week + 5),
    }
    assert state.stage_entered_at == ms(week + 5)
    assert state.category_views == {"shoes": 3}
    assert state.purchases.count == 2
    assert state.purchases.total_spend == 100.0
    assert state.cart.items == {}
    assert state.events_applied == 8
    assert state.session.count == 2
    assert (state.first_event_at, state.last_event_at) == (ms(0), ms(week + 5))


def test_fold_first_event_starts_in_initial_stage_then_moves(
    fold: Fold, make_event: MakeEvent, ms: Ms
) -> None:
    state = fold.apply(None, make_event(type="add_to_cart", properties=product("p1")))

    assert state.customer_id == "c1"
    assert state.journey_map == "retail"
    assert state.stage == "decision"
    assert state.stage_history == [
        StageVisit("awareness", ms(0), "add_to_cart"),
        StageVisit("decision", ms(0), "add_to_cart"),
    ]


def test_fold_stage_reentered_keeps_first_entered_time(
    fold: Fold, make_event: MakeEvent, ms: Ms
) -> None:
    state = run(
        fold,
        [
            make_event(minutes=0, type="review_read"),
            make_event(minutes=1, type="add_to_cart", properties=product("p1")),
            make_event(minutes=2, type="remove_from_cart", properties=product("p1")),
            make_event(minutes=3, type="add_to_cart", properties=product("p1")),
        ],
    )

    assert [visit.stage for visit in state.stage_history] == [
        "awareness",
        "comparison",
        "decision",
        "comparison",
        "decision",
    ]
    assert state.stage_first_entered["decision"] == ms(1)
    assert state.stage_first_entered["comparison"] == ms(0)
    assert state.stage_entered_at == ms(3)


def test_fold_counts_by_type_channel_and_dwell(fold: Fold, make_event: MakeEvent) -> None:
    state = run(
        fold,
        [
            make_event(type="page_view", properties={"dwell_ms": 1500}),
            make_event(type="page_view", channel="app", properties={"dwell_ms": 500}),
            make_event(type="email_open", channel="email"),
        ],
    )

    assert state.counts_by_type == {"page_view": 2, "email_open": 1}
    assert state.counts_by_channel == {"web": 1, "app": 1, "email": 1}
    assert state.dwell_ms_total == 2000


def test_fold_out_of_order_event_keeps_first_and_last_times(
    fold: Fold, make_event: MakeEvent, ms: Ms
) -> None:
    state = run(fold, [make_event(minutes=10), make_event(minutes=5), make_event(minutes=7)])

    assert (state.first_event_at, state.last_event_at) == (ms(5), ms(10))


# --- cart ---------------------------------------------------------------------------------


def test_cart_add_same_product_twice_sums_quantity_keeps_first_added_at(
    fold: Fold, make_event: MakeEvent, ms: Ms
) -> None:
    state = run(
        fold,
        [
            make_event(minutes=1, type="add_to_cart", properties=product("p1", price=10.0)),
            make_event(minutes=2, type="add_to_cart", properties=product("p1", quantity=3)),
        ],
    )

    item = state.cart.items["p1"]
    assert item.quantity == 4
    assert item.price == 10.0
    assert item.added_at == ms(1)
    assert state.cart.updated_at == ms(2)
    assert state.cart.units == 4


def test_cart_add_keeps_category_and_takes_new_price(fold: Fold, make_event: MakeEvent) -> None:
    state = run(
        fold,
        [
            make_event(type="add_to_cart", properties=product("p1", price=10.0, category="hats")),
            make_event(type="add_to_cart", properties=product("p1", price=8.0)),
        ],
    )

    assert state.cart.items["p1"].category == "hats"
    assert state.cart.items["p1"].price == 8.0


def test_cart_remove_with_quantity_decrements(fold: Fold, make_event: MakeEvent) -> None:
    state = run(
        fold,
        [
            make_event(type="add_to_cart", properties=product("p1", quantity=5)),
            make_event(type="remove_from_cart", properties=product("p1", quantity=2)),
        ],
    )

    assert state.cart.items["p1"].quantity == 3
    assert state.stage == "decision"


def test_cart_remove_without_quantity_deletes_item(fold: Fold, make_event: MakeEvent) -> None:
    state = run(
        fold,
        [
            make_event(type="add_to_cart", properties=product("p1", quantity=5)),
            make_event(type="add_to_cart", properties=product("p2")),
            make_event(type="remove_from_cart", properties=product("p1")),
        ],
    )

    assert list(state.cart.items) == ["p2"]


def test_cart_remove_more_than_held_deletes_item(fold: Fold, make_event: MakeEvent) -> None:
    state = run(
        fold,
        [
            make_event(type="add_to_cart", properties=product("p1", quantity=2)),
            make_event(type="remove_from_cart", properties=product("p1", quantity=9)),
        ],
    )

    assert state.cart.items == {}
    assert state.cart.units == 0


def test_cart_remove_unknown_product_changes_nothing(fold: Fold, make_event: MakeEvent) -> None:
    first = run(fold, [make_event(type="add_to_cart", properties=product("p1"))])

    state = fold.apply(first, make_event(type="remove_from_cart", properties=product("p2")))

    assert state.cart == first.cart


def test_cart_opened_at_set_when_non_empty_and_cleared_when_emptied(
    fold: Fold, make_event: MakeEvent, ms: Ms
) -> None:
    state = fold.apply(None, make_event(minutes=0, type="page_view"))
    assert state.cart.opened_at is None

    state = fold.apply(state, make_event(minutes=1, type="add_to_cart", properties=product("a")))
    assert state.cart.opened_at == ms(1)

    state = fold.apply(state, make_event(minutes=2, type="add_to_cart", properties=product("b")))
    assert state.cart.opened_at == ms(1)

    state = fold.apply(
        state, make_event(minutes=3, type="remove_from_cart", properties=product("a"))
    )
    assert state.cart.opened_at == ms(1)

    state = fold.apply(
        state, make_event(minutes=4, type="remove_from_cart", properties=product("b"))
    )
    assert state.cart.opened_at is None
    assert state.cart.updated_at == ms(4)

    state = fold.apply(state, make_event(minutes=5, type="add_to_cart", properties=product("c")))
    assert state.cart.opened_at == ms(5)


def test_cart_emptied_in_decision_moves_back_to_comparison(
    fold: Fold, make_event: MakeEvent
) -> None:
    state = run(
        fold,
        [
            make_event(type="add_to_cart", properties=product("p1", quantity=2)),
            make_event(type="remove_from_cart", properties=product("p1", quantity=1)),
        ],
    )
    assert state.stage == "decision"

    state = fold.apply(state, make_event(type="remove_from_cart", properties=product("p1")))

    assert state.stage == "comparison"


def test_cart_value_sums_quantity_times_price(fold: Fold, make_event: MakeEvent) -> None:
    state = run(
        fold,
        [
            make_event(type="add_to_cart", properties=product("p1", price=19.99, quantity=3)),
            make_event(type="add_to_cart", properties=product("p2", price=0.01)),
            make_event(type="add_to_cart", properties=product("p3")),
        ],
    )

    assert state.cart.value == 59.98
    assert state.cart.units == 5


def test_purchase_without_product_id_buys_whole_cart(
    fold: Fold, make_event: MakeEvent, ms: Ms
) -> None:
    state = run(
        fold,
        [
            make_event(
                minutes=1, type="add_to_cart", properties=product("p1", price=10, quantity=2)
            ),
            make_event(minutes=2, type="add_to_cart", properties=product("p2", price=5.5)),
            make_event(minutes=3, type="purchase", properties={"order_id": "o1"}),
        ],
    )

    assert state.purchases.total_spend == 25.5
    assert state.purchases.items == 3
    assert state.purchases.count == 1
    assert state.purchases.last_at == ms(3)
    assert state.cart.items == {}
    assert state.cart.opened_at is None
    assert state.cart.updated_at == ms(3)
    assert [r.product_id for r in state.purchases.recent_products] == ["p1", "p2"]


def test_purchase_without_product_id_with_price_spends_price(
    fold: Fold, make_event: MakeEvent
) -> None:
    state = run(
        fold,
        [
            make_event(type="add_to_cart", properties=product("p1", price=10.0, quantity=2)),
            make_event(type="purchase", properties={"price": 18.0}),
        ],
    )

    assert state.purchases.total_spend == 18.0
    assert state.purchases.items == 2
    assert state.cart.items == {}


def test_purchase_with_product_id_removes_only_that_product(
    fold: Fold, make_event: MakeEvent
) -> None:
    state = run(
        fold,
        [
            make_event(type="add_to_cart", properties=product("p1", price=10.0, quantity=2)),
            make_event(type="add_to_cart", properties=product("p2", price=5.0)),
            make_event(type="purchase", properties=product("p1")),
        ],
    )

    assert list(state.cart.items) == ["p2"]
    assert state.purchases.total_spend == 20.0
    assert state.purchases.items == 2
    assert [r.product_id for r in state.purchases.recent_products] == ["p1"]


def test_purchase_with_product_id_and_quantity_takes_part_of_item(
    fold: Fold, make_event: MakeEvent
) -> None:
    state = run(
        fold,
        [
            make_event(type="add_to_cart", properties=product("p1", price=10.0, quantity=3)),
            make_event(type="purchase", properties=product("p1", quantity=1, price=9.0)),
        ],
    )

    assert state.cart.items["p1"].quantity == 2
    assert state.purchases.total_spend == 9.0
    assert state.purchases.items == 1


def test_purchase_count_distinct_order_ids(fold: Fold, make_event: MakeEvent) -> None:
    state = run(
        fold,
        [
            make_event(type="purchase", properties=product("p1", order_id="o1")),
            make_event(type="purchase", properties=product("p2", order_id="o1")),
            make_event(type="purchase", properties=product("p3", order_id="o2")),
        ],
    )

    assert state.purchases.count == 2
    assert state.purchases.items == 3


def test_purchase_count_order_id_seen_before_not_counted_again(
    fold: Fold, make_event: MakeEvent
) -> None:
    # METRICS documents `purchases` as "orders placed so far (distinct order_id ...)": lines of
    # order o1 arriving after an event of order o2 (late or out-of-order delivery) must not
    # count o1 a second time.
    state = run(
        fold,
        [
            make_event(minutes=0, type="purchase", properties=product("p1", order_id="o1")),
            make_event(minutes=1, type="purchase", properties=product("p2", order_id="o2")),
            make_event(minutes=2, type="purchase", properties=product("p3", order_id="o1")),
        ],
    )

    assert state.purchases.count == 2


def test_purchase_count_without_order_id_one_per_session(fold: Fold, make_event: MakeEvent) -> None:
    state = run(
        fold,
        [
            make_event(type="purchase", session_id="s1", properties=product("p1")),
            make_event(type="purchase", session_id="s1", properties=product("p2")),
        ],
    )
    assert state.purchases.count == 1

    state = fold.apply(state, make_event(type="purchase", session_id="s2"))

    assert state.purchases.count == 2
    assert state.session.count == 2


def test_purchase_recent_products_deduplicated_and_bounded(
    retail_map: JourneyMap, make_event: MakeEvent, ms: Ms
) -> None:
    fold = Fold(retail_map, Limits(recent_products=2))

    state = run(
        fold,
        [
            make_event(minutes=i, type="purchase", properties=product(pid))
            for i, pid in enumerate(["p1", "p2", "p1", "p3", "p3"])
        ],
    )

    assert state.purchases.recent_products == [
        RecentProduct("p1", ms(2)),
        RecentProduct("p3", ms(4)),
    ]


# --- sessions -----------------------------------------------------------------------------


def test_session_new_when_session_id_changes(fold: Fold, make_event: MakeEvent, ms: Ms) -> None:
    state = run(
        fold,
        [
            make_event(minutes=0, session_id="s1"),
            make_event(minutes=1, session_id="s1"),
            make_event(minutes=2, session_id="s2"),
        ],
    )

    assert state.session.id == "s2"
    assert state.session.count == 2
    assert state.session.started_at == ms(2)
    assert state.session.events == 1


def test_session_same_id_after_long_gap_stays(fold: Fold, make_event: MakeEvent) -> None:
    state = run(
        fold, [make_event(minutes=0, session_id="s1"), make_event(minutes=600, session_id="s1")]
    )

    assert state.session.count == 1
    assert state.session.events == 2


def test_session_without_id_new_after_timeout_gap(
    fold: Fold, make_event: MakeEvent, ms: Ms
) -> None:
    state = run(fold, [make_event(minutes=0), make_event(minutes=20), make_event(minutes=50)])
    assert state.session.count == 1
    assert state.session.events == 3

    state = fold.apply(state, make_event(minutes=80.5))

    assert state.session.count == 2
    assert state.session.started_at == ms(80.5)
    assert state.session.events == 1


def test_session_timeout_follows_map(b2b_map: JourneyMap, make_event: MakeEvent) -> None:
    fold = Fold(b2b_map)

    state = run(fold, [make_event(minutes=0), make_event(minutes=45), make_event(minutes=106)])

    assert state.session.count == 2


# --- bounded lists ------------------------------------------------------------------------


def test_touchpoints_bounded_keep_latest(
    retail_map: JourneyMap, make_event: MakeEvent, ms: Ms
) -> None:
    fold = Fold(retail_map, Limits(touchpoints=3))

    state = run(
        fold,
        [make_event(minutes=i, properties={"url": f"/page/{i}"}) for i in range(5)]
        + [make_event(minutes=5, type="product_view", properties=product("p1", url="x" * 300))],
    )

    assert [tp.at for tp in state.touchpoints] == [ms(3), ms(4), ms(5)]
    assert state.touchpoints[0].page == "/page/3"
    assert state.touchpoints[-1].type == "product_view"
    assert state.touchpoints[-1].product_id == "p1"
    assert state.touchpoints[-1].page == "x" * 256


def test_stage_history_bounded_keep_latest(retail_map: JourneyMap, make_event: MakeEvent) -> None:
    fold = Fold(retail_map, Limits(stage_history=2))

    state = run(
        fold,
        [
            make_event(type="search"),
            make_event(type="review_read"),
            make_event(type="add_to_cart", properties=product("p1")),
        ],
    )

    assert [visit.stage for visit in state.stage_history] == ["comparison", "decision"]
    assert set(state.stage_first_entered) == {
        "awareness",
        "consideration",
        "comparison",
        "decision",
    }


def test_categories_bounded_least_viewed_evicted(
    retail_map: JourneyMap, make_event: MakeEvent
) -> None:
    fold = Fold(retail_map, Limits(categories=2))

    def view(category: str) -> Event:
        return make_event(type="product_view", properties=product("p", category=category))

    state = run(fold, [view("shoes"), view("hats"), view("shoes"), view("bags")])

    assert state.category_views == {"shoes": 2, "bags": 1}


def test_seen_window_id_older_than_window_applied_again(
    retail_map: JourneyMap, make_event: MakeEvent
) -> None:
    # The window's contract: only the last `seen_event_ids` ids are remembered, so a retry of
    # an older event id (without a position fence) is applied a second time.
    fold = Fold(retail_map, Limits(seen_event_ids=4))
    events = [make_event(minutes=i) for i in range(5)]
    state = run(fold, events)
    assert len(state.seen) == 4 * DIGEST_WIDTH

    for recent in events[1:]:
        assert fold.step(state, recent) == (state, "duplicate_event_id")
    again, reason = fold.step(state, events[0])

    assert reason is None
    assert again.events_applied == 6


# --- purity and idempotence ---------------------------------------------------------------


def test_step_never_mutates_input_state(fold: Fold, make_event: MakeEvent) -> None:
    state = run(
        fold,
        [
            make_event(
                type="product_view", session_id="s1", properties=product("p1", category="c")
            ),
            make_event(type="add_to_cart", session_id="s1", properties=product("p1", price=3.0)),
            make_event(type="add_to_cart", session_id="s1", properties=product("p2", price=4.0)),
            make_event(type="purchase", session_id="s1", properties=product("p2", order_id="o1")),
        ],
    )
    state = fold.apply(state, make_event(type="page_view"), Position(0, 7))
    before = encode_state(state)

    followers = [
        make_event(minutes=90, type="product_view", session_id="s2", properties=product("p3")),
        make_event(minutes=91, type="add_to_cart", properties=product("p1", quantity=2)),
        make_event(minutes=92, type="remove_from_cart", properties=product("p1", quantity=1)),
        make_event(minutes=93, type="purchase", properties={"order_id": "o2", "dwell_ms": 5}),
        make_event(minutes=94, type="review_written"),
    ]
    for i, event in enumerate(followers):
        new, reason = fold.step(state, event, Position(0, 8 + i))
        assert reason is None
        assert new is not state
        assert encode_state(new) != before

    assert encode_state(state) == before


def test_step_position_at_or_below_offset_returns_same_state_redelivered(
    fold: Fold, make_event: MakeEvent
) -> None:
    state = fold.apply(None, make_event(), Position(3, 10))
    assert state.offsets == {"3": 10}

    for offset in (10, 9, 0):
        same, reason = fold.step(state, make_event(), Position(3, offset))
        assert same is state
        assert reason == "redelivered"


def test_step_other_partition_not_fenced(fold: Fold, make_event: MakeEvent) -> None:
    state = fold.apply(None, make_event(), Position(3, 10))

    new, reason = fold.step(state, make_event(), Position(4, 1))

    assert reason is None
    assert new.offsets == {"3": 10, "4": 1}
    assert new.events_applied == 2


def test_step_same_event_id_new_position_duplicate_event_id(
    fold: Fold, make_event: MakeEvent
) -> None:
    event = make_event(type="add_to_cart", properties=product("p1"))
    state = fold.apply(None, event, Position(0, 1))

    same, reason = fold.step(state, event, Position(0, 2))

    assert same is state
    assert reason == "duplicate_event_id"
    assert state.cart.units == 1


def test_step_same_event_id_different_content_duplicate_event_id(
    fold: Fold, make_event: MakeEvent
) -> None:
    state = fold.apply(None, make_event(event_id="retry-1", type="search"))

    same, reason = fold.step(state, make_event(event_id="retry-1", type="purchase"))

    assert same is state
    assert reason == "duplicate_event_id"


# --- properties ---------------------------------------------------------------------------

PRODUCTS = ("p1", "p2", "p3")
CART_TYPES = ("product_view", "add_to_cart", "remove_from_cart", "purchase")
PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
Record = tuple[Event, Position | None]
States = dict[str, JourneyState]


@st.composite
def event_streams(draw: st.DrawFn) -> list[Event]:
    """Events of 1-3 customers with distinct ids; timestamps increasing or shuffled."""
    customers = ["c1", "c2", "c3"][: draw(st.integers(1, 3))]
    minutes = draw(st.lists(st.integers(0, 240), min_size=1, max_size=30))
    if draw(st.booleans()):
        minutes.sort()
    events = []
    for i, minute in enumerate(minutes):
        event_type = draw(st.sampled_from(CART_TYPES) | st.sampled_from(CANONICAL_TYPES))
        pid = draw(st.sampled_from(PRODUCTS) | st.none())
        if event_type in PRODUCT_TYPES and pid is None:
            pid = PRODUCTS[0]
        props = {
            "product_id": pid,
            "quantity": draw(st.none() | st.integers(1, 4)),
            "price": draw(st.none() | st.floats(0, 500, allow_nan=False, allow_infinity=False)),
            "order_id": draw(st.none() | st.sampled_from(["o1", "o2"])),
            "category": draw(st.none() | st.sampled_from(["shoes", "hats"])),
            "dwell_ms": draw(st.none() | st.integers(0, 10_000)),
        }
        data = {
            "event_id": f"ev-{i}",
            "customer_id": draw(st.sampled_from(customers)),
            "type": event_type,
            "channel": draw(st.sampled_from(list(Channel))).value,
            "timestamp": f"2026-03-01T{9 + minute // 60:02d}:{minute % 60:02d}:00Z",
            "session_id": draw(st.none() | st.sampled_from(["s1", "s2"])),
            "properties": {key: value for key, value in props.items() if value is not None},
        }
        events.append(Event.model_validate(data))
    return events


def with_positions(events: list[Event]) -> list[Record]:
    return [(event, Position(0, offset)) for offset, event in enumerate(events)]


def fold_all(
    fold: Fold,
    records: Iterable[Record],
    states: States | None = None,
    check: Callable[[JourneyState], None] | None = None,
) -> States:
    """Fold a multi-customer stream, one state per customer (as the consumer keys them)."""
    states = dict(states or {})
    for event, position in records:
        state = fold.apply(states.get(event.customer_id), event, position)
        if check is not None:
            check(state)
        states[event.customer_id] = state
    return states


def check_invariants(state: JourneyState) -> None:
    assert decode_state(encode_state(state)) == state
    assert state.cart.units >= 0
    assert all(item.quantity >= 1 for item in state.cart.items.values())


@PROPERTY_SETTINGS
@given(events=event_streams())
def test_property_every_event_applied_twice_equals_once(fold: Fold, events: list[Event]) -> None:
    once = fold_all(fold, with_positions(events))

    redelivered = fold_all(fold, [r for r in with_positions(events) for _ in range(2)])
    retried = fold_all(fold, [(e, None) for e in events for _ in range(2)])

    assert redelivered == once
    assert retried == fold_all(fold, [(e, None) for e in events])


@PROPERTY_SETTINGS
@given(events=event_streams(), data=st.data())
def test_property_duplicates_at_later_positions_change_nothing(
    fold: Fold, events: list[Event], data: st.DataObject
) -> None:
    log: list[tuple[Event, bool]] = [(event, False) for event in events]
    copies = data.draw(st.lists(st.sampled_from(range(len(events))), max_size=10))
    for index in copies:
        original = next(i for i, (e, dup) in enumerate(log) if e is events[index] and not dup)
        at = data.draw(st.integers(original + 1, len(log)))
        log.insert(at, (events[index], True))
    numbered = [(event, dup, Position(0, offset)) for offset, (event, dup) in enumerate(log)]

    with_dups = fold_all(fold, [(event, pos) for event, _, pos in numbered])
    without = fold_all(fold, [(event, pos) for event, dup, pos in numbered if not dup])

    assert with_dups == without


@PROPERTY_SETTINGS
@given(events=event_streams(), data=st.data())
def test_property_redelivered_prefix_changes_nothing(
    fold: Fold, events: list[Event], data: st.DataObject
) -> None:
    records = with_positions(events)
    states = fold_all(fold, records)
    snapshot = {cid: encode_state(state) for cid, state in states.items()}
    k = data.draw(st.integers(1, len(records)))

    for event, position in records[:k]:
        state = states[event.customer_id]
        assert fold.step(state, event, position) == (state, "redelivered")
    after = fold_all(fold, records[:k], states)

    assert after == states
    assert {cid: encode_state(state) for cid, state in after.items()} == snapshot


@PROPERTY_SETTINGS
@given(events=event_streams())
def test_property_every_state_round_trips_and_cart_never_negative(
    fold: Fold, events: list[Event]
) -> None:
    states = fold_all(fold, with_positions(events), check=check_invariants)

    for customer_id, state in states.items():
        ids = {e.event_id for e in events if e.customer_id == customer_id}
        assert state.events_applied == len(ids)
        assert state.counts_by_type == {
            t: sum(1 for e in events if e.customer_id == customer_id and e.type == t)
            for t in {e.type for e in events if e.customer_id == customer_id}
        }


@PROPERTY_SETTINGS
@given(events=event_streams(), data=st.data())
def test_property_events_applied_counts_distinct_ids_with_retries(
    fold: Fold, events: list[Event], data: st.DataObject
) -> None:
    retries = data.draw(st.lists(st.sampled_from(events), max_size=10))
    stream: list[Record] = [(e, None) for e in [*events, *retries]]

    states = fold_all(fold, stream, check=check_invariants)

    assert sum(state.events_applied for state in states.values()) == len(
        {e.event_id for e in events}
    )


def test_last_digest_is_the_digest_of_the_event_applied_last() -> None:
    from models.fold import Fold, event_digest, last_digest
    from models.journeymap import load_journey_map
    from tests.support import journey_stream

    fold = Fold(load_journey_map("retail"))
    state = None
    for raw in journey_stream(customers=1, events=300):
        state = fold.apply(state, Event.model_validate(raw))
        assert last_digest(state) == event_digest(raw["event_id"])


# --- consent ------------------------------------------------------------------------------


def test_consent_the_newest_by_event_time_wins_and_survives_storage(
    fold: Fold, make_event: MakeEvent, ms: Ms
) -> None:
    def consent(minutes: float, allowed: bool) -> Event:
        props = {"personalization": allowed}
        return make_event(minutes=minutes, type="consent_updated", properties=props)

    fresh = run(fold, [make_event(minutes=0, type="page_view")])
    opted_out = run(fold, [consent(5, False)], fresh)
    late_opt_in = run(fold, [consent(3, True)], opted_out)  # older than the opt-out
    back_in = run(fold, [consent(7, True)], late_opt_in)

    assert fresh.personalization
    assert fresh.consent_at == 0
    assert "consent_at" not in orjson.loads(encode_state(fresh))  # never sent: not stored
    assert (opted_out.personalization, opted_out.consent_at) == (False, ms(5))
    assert (late_opt_in.personalization, late_opt_in.consent_at) == (False, ms(5))
    assert (back_in.personalization, back_in.consent_at) == (True, ms(7))
    assert decode_state(encode_state(opted_out)) == opted_out
