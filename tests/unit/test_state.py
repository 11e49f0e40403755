"""Journey state: its wire form (`encode_state`/`decode_state`) and `copy()`."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from models.events import Event
from models.fold import Fold, Position
from models.state import (
    SCHEMA_VERSION,
    CartItem,
    JourneyState,
    RecentProduct,
    StageVisit,
    Touchpoint,
    decode_state,
    encode_state,
)

MakeEvent = Callable[..., Event]


@pytest.fixture
def rich_state(fold: Fold, make_event: MakeEvent) -> JourneyState:
    """A state with every container non-empty and optional leaves both set and unset."""
    shoes = {"product_id": "p1", "category": "shoes"}
    events = [
        make_event(minutes=0, session_id="s1", properties={"url": "/home", "dwell_ms": 900}),
        make_event(minutes=1, type="product_view", session_id="s1", properties=shoes),
        make_event(
            minutes=2, type="add_to_cart", session_id="s1", properties={**shoes, "price": 49.9}
        ),
        make_event(
            minutes=3,
            type="add_to_cart",
            session_id="s1",
            properties={"product_id": "p2", "price": 5, "quantity": 2},
        ),
        make_event(
            minutes=4,
            type="purchase",
            session_id="s1",
            properties={"product_id": "p2", "order_id": "o-1"},
        ),
        make_event(minutes=5, type="email_open", channel="email"),
    ]
    state = fold.fold(None, [(e, Position(i % 2, 100 + i)) for i, e in enumerate(events)])
    assert state is not None
    return state


def test_encode_state_rich_state_round_trips(rich_state: JourneyState) -> None:
    raw = encode_state(rich_state)

    decoded = decode_state(raw)

    assert decoded == rich_state
    assert encode_state(decoded) == raw
    assert decode_state(raw.decode()) == rich_state


def test_decode_state_restores_named_tuple_leaves(rich_state: JourneyState) -> None:
    decoded = decode_state(encode_state(rich_state))

    assert all(type(v) is StageVisit for v in decoded.stage_history)
    assert all(type(t) is Touchpoint for t in decoded.touchpoints)
    assert all(type(r) is RecentProduct for r in decoded.purchases.recent_products)
    assert all(type(i) is CartItem for i in decoded.cart.items.values())
    assert decoded.cart.items["p1"] == CartItem(
        "p1", 1, 49.9, "shoes", rich_state.cart.items["p1"].added_at
    )
    assert decoded.offsets == {"0": 104, "1": 105}
    assert decoded.session.id == "s1"


def test_decode_state_short_leaf_rows_get_their_defaults_and_long_ones_are_refused(
    rich_state: JourneyState,
) -> None:
    data = orjson.loads(encode_state(rich_state))
    data["touchpoints"][0] = data["touchpoints"][0][:3]  # written before product and page
    decoded = decode_state(orjson.dumps(data))
    assert decoded.touchpoints[0] == Touchpoint(*data["touchpoints"][0], None, None)
    assert type(decoded.touchpoints[0]) is Touchpoint

    data["stage_history"][0] = [*data["stage_history"][0], "extra"]
    with pytest.raises(TypeError):
        decode_state(orjson.dumps(data))


def test_encode_state_leaves_are_json_arrays(rich_state: JourneyState) -> None:
    data = orjson.loads(encode_state(rich_state))

    assert data["v"] == SCHEMA_VERSION
    assert isinstance(data["stage_history"][0], list)
    assert isinstance(data["touchpoints"][0], list)
    assert data["cart"][0][0][0] == "p1"
    assert len(data["session"]) == 4


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, 0, None, "1"])
def test_decode_state_schema_version_mismatch_raises_value_error(
    rich_state: JourneyState, version: object
) -> None:
    data = orjson.loads(encode_state(rich_state))
    data["v"] = version

    with pytest.raises(ValueError, match="schema"):
        decode_state(orjson.dumps(data))


def test_decode_state_missing_version_raises_value_error(rich_state: JourneyState) -> None:
    data = orjson.loads(encode_state(rich_state))
    del data["v"]

    with pytest.raises(ValueError, match="schema"):
        decode_state(orjson.dumps(data))


def test_copy_equal_but_not_shared(rich_state: JourneyState) -> None:
    copy = rich_state.copy()

    assert copy == rich_state
    assert copy is not rich_state
    containers = (
        "stage_history",
        "stage_first_entered",
        "counts_by_type",
        "counts_by_channel",
        "category_views",
        "cart",
        "touchpoints",
        "purchases",
        "session",
        "offsets",
    )
    for name in containers:
        assert getattr(copy, name) is not getattr(rich_state, name), name
    assert copy.cart.items is not rich_state.cart.items
    assert copy.purchases.recent_products is not rich_state.purchases.recent_products


def test_copy_mutating_every_container_leaves_original_unchanged(
    rich_state: JourneyState,
) -> None:
    before = encode_state(rich_state)
    copy = rich_state.copy()

    copy.customer_id = "other"
    copy.stage = "advocacy"
    copy.events_applied += 10
    copy.stage_history.append(StageVisit("loyalty", 1, "purchase"))
    copy.stage_history.pop(0)
    copy.stage_first_entered["loyalty"] = 1
    copy.counts_by_type["search"] = 99
    copy.counts_by_type.clear()
    copy.counts_by_channel["web"] = 99
    copy.category_views["hats"] = 1
    copy.category_views.pop("shoes")
    copy.cart.items["p9"] = CartItem("p9", 1, 1.0, None, 1)
    del copy.cart.items["p1"]
    copy.cart.opened_at = None
    copy.cart.updated_at = 0
    copy.touchpoints.append(Touchpoint("search", "web", 1))
    copy.touchpoints.clear()
    copy.purchases.count += 1
    copy.purchases.items += 1
    copy.purchases.total_spend = 1e6
    copy.purchases.order_keys.append("o-9")
    copy.purchases.recent_products.append(RecentProduct("p9", 1))
    copy.purchases.recent_products.pop(0)
    copy.session.id = "s9"
    copy.session.count += 1
    copy.session.events = 0
    copy.dwell_ms_total = 0
    copy.seen += "x" * 12
    copy.offsets["0"] = 10**9
    copy.offsets["7"] = 1

    assert encode_state(rich_state) == before
    assert encode_state(copy) != before
