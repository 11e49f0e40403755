"""Features: names and vector agree, training and serving see the same numbers, no future leak."""

from __future__ import annotations

import doctest
import math
from array import array
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import models.features
from models.events import CANONICAL_TYPES, PRODUCT_TYPES, Channel, Event
from models.features import (
    BASE_FEATURES,
    FEATURES_VERSION,
    STAGE_PREFIX,
    feature_vector,
    features,
    from_vector,
)
from models.fold import Fold
from models.state import Cart, CartItem, JourneyState, Purchases, Session, Touchpoint

MakeEvent = Callable[..., Event]
Ms = Callable[[float], int]

TIME_DEPENDENT = {
    "stage_age_log_s",
    "since_last_event_log_s",
    "since_first_event_log_s",
    "cart_age_log_s",
    "cart_idle_log_s",
    "since_last_purchase_log_s",
    "session_duration_log_s",
    "hour_sin",
    "hour_cos",
    "weekday_sin",
    "weekday_cos",
}


def journey(make_event: MakeEvent) -> list[Event]:
    """A shopper who browses, fills a cart, buys, and comes back by email."""

    def view(minutes: float, pid: str) -> Event:
        props = {"product_id": pid, "category": "shoes", "price": 50.0, "dwell_ms": 4000}
        return make_event(minutes=minutes, type="product_view", properties=props)

    return [
        make_event(minutes=0, type="page_view", session_id="s1"),
        make_event(minutes=1, type="search", session_id="s1"),
        view(2, "p1"),
        view(3, "p2"),
        view(4, "p3"),
        make_event(minutes=5, type="add_to_cart", properties={"product_id": "p3", "price": 80.0}),
        make_event(minutes=6, type="add_to_cart", properties={"product_id": "p1", "quantity": 2}),
        make_event(minutes=7, type="remove_from_cart", properties={"product_id": "p1"}),
        make_event(minutes=8, type="checkout_started", channel="app"),
        make_event(minutes=9, type="purchase", properties={"order_id": "o1"}),
        make_event(minutes=600, type="email_click", channel="email", session_id="s2"),
        make_event(minutes=601, type="ad_click", channel="ads", session_id="s2"),
        make_event(minutes=602, type="review_written", session_id="s2"),
    ]


def prefix_state(fold: Fold, events: list[Event], k: int) -> JourneyState:
    state = fold.fold(None, ((event, None) for event in events[:k]))
    assert state is not None
    return state


def minimal_state(at: int = 0) -> JourneyState:
    return JourneyState("c1", "retail", "awareness", at, at, at)


def test_features_docstring_examples_hold() -> None:
    result = doctest.testmod(models.features)

    assert result.attempted > 0
    assert result.failed == 0


def test_base_features_names_unique_and_match_vector_length(
    fold: Fold, make_event: MakeEvent
) -> None:
    state = prefix_state(fold, journey(make_event), 13)

    assert len(set(BASE_FEATURES)) == len(BASE_FEATURES)
    assert len(feature_vector(state, state.last_event_at)) == len(BASE_FEATURES)
    assert not any(name.startswith(STAGE_PREFIX) for name in BASE_FEATURES)
    assert FEATURES_VERSION == 1


def test_features_any_state_equals_from_vector_plus_stage_one_hot(
    fold: Fold, make_event: MakeEvent
) -> None:
    events = journey(make_event)
    for k in range(1, len(events) + 1):
        state = prefix_state(fold, events, k)
        now = state.last_event_at + 30_000
        x = features(state, now)
        assert x == from_vector(feature_vector(state, now), state.stage)
        assert {k for k in x if k.startswith(STAGE_PREFIX)} == {f"stage={state.stage}"}
        assert x[f"stage={state.stage}"] == 1.0


def test_feature_vector_float32_or_json_round_trip_is_exact(
    fold: Fold, make_event: MakeEvent
) -> None:
    state = prefix_state(fold, journey(make_event), 10)
    vector = feature_vector(state, state.last_event_at + 1234)

    packed = array("f", vector).tobytes()

    assert array("f", packed).tolist() == vector
    assert orjson.loads(orjson.dumps(vector)) == vector


def test_from_vector_wrong_length_raises_value_error() -> None:
    with pytest.raises(ValueError, match="expected 56"):
        from_vector([0.0, 1.0], "awareness")


def test_features_known_journey_has_expected_values(
    fold: Fold, make_event: MakeEvent, ms: Ms
) -> None:
    state = prefix_state(fold, journey(make_event), 8)  # after the remove_from_cart
    x = features(state, ms(8))

    assert x["cart_open"] == 1.0
    assert x["cart_units_log"] == float(array("f", [math.log1p(1)])[0])
    assert x["cart_value_log"] == float(array("f", [math.log1p(80.0)])[0])
    assert x["cart_age_log_s"] == float(array("f", [math.log1p(180.0)])[0])
    assert x["cart_idle_log_s"] == float(array("f", [math.log1p(60.0)])[0])
    assert x["count_product_view_log"] == float(array("f", [math.log1p(3)])[0])
    assert x["add_to_cart_per_view"] == float(array("f", [(2 + 1) / (3 + 2)])[0])
    assert x["has_purchased"] == 0.0
    assert x["since_last_purchase_log_s"] == 0.0
    assert x["last_type_remove_from_cart"] == 1.0
    assert sum(x[f"last_type_{t}"] for t in ("remove_from_cart", "other", "page_view")) == 1.0
    assert x["channel_share_web"] == 1.0
    assert x["stage=decision"] == 1.0
    assert x["max_category_views_log"] == float(array("f", [math.log1p(3)])[0])


def test_features_last_touchpoint_outside_fixed_set_sets_other_slot(
    fold: Fold, make_event: MakeEvent
) -> None:
    state = prefix_state(fold, journey(make_event), 13)  # ends with review_written
    x = features(state, state.last_event_at)

    assert x["last_type_other"] == 1.0
    assert sum(x[name] for name in BASE_FEATURES if name.startswith("last_type_")) == 1.0


def test_features_streamed_fold_equals_prefix_fold_at_each_event_time(
    fold: Fold, make_event: MakeEvent
) -> None:
    events = journey(make_event)
    # Out of order: the last event is sent early, so some prefixes end before earlier times.
    events = [*events[:3], events[-1], *events[3:-1]]
    streamed: list[dict[str, float]] = []
    state: JourneyState | None = None
    for event in events:
        state = fold.apply(state, event)
        streamed.append(features(state, event.timestamp_ms))

    for k, event in enumerate(events, start=1):
        assert features(prefix_state(fold, events, k), event.timestamp_ms) == streamed[k - 1]


def test_features_state_after_more_events_unchanged_for_earlier_state(
    fold: Fold, make_event: MakeEvent
) -> None:
    events = journey(make_event)
    early = prefix_state(fold, events, 6)
    before = features(early, events[5].timestamp_ms)

    later = fold.fold(early, ((event, None) for event in events[6:]))

    assert later is not None
    assert features(later, events[5].timestamp_ms) != before
    assert features(early, events[5].timestamp_ms) == before


def test_features_later_now_changes_only_time_dependent_features(
    fold: Fold, make_event: MakeEvent
) -> None:
    state = prefix_state(fold, journey(make_event), 7)  # cart open, mid-session
    now = state.last_event_at
    early = features(state, now)
    late = features(state, now + 5 * 3_600_000 + 17 * 60_000)

    changed = {name for name in early if early[name] != late[name]}

    assert changed <= TIME_DEPENDENT
    assert {"stage_age_log_s", "cart_idle_log_s", "hour_sin", "hour_cos"} <= changed


def test_features_weekday_follows_now_ms_in_utc(ms: Ms) -> None:
    state = minimal_state(ms(0))
    # BASE_TIME is Sunday 2026-03-01 09:00 UTC; one day later is Monday (angle 0).
    monday = features(state, ms(24 * 60))
    noon_sunday = features(state, ms(3 * 60))

    assert monday["weekday_sin"] == 0.0
    assert monday["weekday_cos"] == 1.0
    assert noon_sunday["hour_sin"] == float(array("f", [math.sin(math.pi)])[0])
    assert noon_sunday["hour_cos"] == -1.0


def test_features_now_before_state_times_clamps_durations_to_zero(
    fold: Fold, make_event: MakeEvent
) -> None:
    state = prefix_state(fold, journey(make_event), 13)
    x = features(state, state.first_event_at - 3_600_000)

    for name in TIME_DEPENDENT - {"hour_sin", "hour_cos", "weekday_sin", "weekday_cos"}:
        assert x[name] == 0.0, name
    assert all(math.isfinite(v) for v in x.values())


def test_features_empty_state_all_finite() -> None:
    state = minimal_state()

    x = features(state, 0)

    assert all(math.isfinite(v) for v in x.values())
    assert x["cart_open"] == 0.0
    assert x["add_to_cart_per_view"] == 0.5
    assert sum(x[name] for name in BASE_FEATURES if name.startswith("last_type_")) == 0.0


def test_features_huge_state_all_finite_and_bounded() -> None:
    big = 10**12
    items = {f"p{i}": CartItem(f"p{i}", 10_000, 1e9, "c", 0) for i in range(200)}
    state = JourneyState(
        "c1",
        "retail",
        "loyalty",
        0,
        0,
        big,
        events_applied=big,
        counts_by_type=dict.fromkeys(CANONICAL_TYPES, big),
        counts_by_channel={c.value: big for c in Channel},
        category_views={f"cat{i}": big for i in range(50)},
        cart=Cart(items, 0, big),
        touchpoints=[Touchpoint("purchase", "web", big)],
        purchases=Purchases(big, big, 1e15, big),
        session=Session("s", big, 0, big),
        dwell_ms_total=big * 86_400_000,
    )

    x = features(state, 2**62)

    assert all(math.isfinite(v) for v in x.values())
    assert max(abs(v) for v in x.values()) < 100


@st.composite
def event_streams(draw: st.DrawFn) -> list[Event]:
    """One customer's events over up to a few years, in any order, with extreme properties."""
    count = draw(st.integers(1, 25))
    stream = []
    for i in range(count):
        event_type = draw(st.sampled_from(CANONICAL_TYPES))
        props: dict[str, Any] = {
            "product_id": draw(st.sampled_from(["p1", "p2"]))
            if event_type in PRODUCT_TYPES or draw(st.booleans())
            else None,
            "quantity": draw(st.none() | st.integers(1, 10_000)),
            "price": draw(st.none() | st.floats(0, 1e9)),
            "order_id": draw(st.none() | st.sampled_from(["o1", "o2", "o3"])),
            "category": draw(st.none() | st.sampled_from(["a", "b", "c"])),
            "dwell_ms": draw(st.none() | st.integers(0, 86_400_000)),
        }
        seconds = draw(st.integers(0, 3 * 365 * 86_400))
        stream.append(
            Event.model_validate(
                {
                    "event_id": f"ev-{i}",
                    "customer_id": "c1",
                    "type": event_type,
                    "channel": draw(st.sampled_from(list(Channel))).value,
                    "timestamp": 1_700_000_000 + seconds,
                    "session_id": draw(st.none() | st.sampled_from(["s1", "s2"])),
                    "properties": {k: v for k, v in props.items() if v is not None},
                }
            )
        )
    return stream


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=event_streams(), offset_s=st.integers(-(10**9), 10**9))
def test_property_features_any_stream_all_finite(
    fold: Fold, events: list[Event], offset_s: int
) -> None:
    state: JourneyState | None = None
    for event in events:
        state = fold.apply(state, event)
        for now in (event.timestamp_ms, event.timestamp_ms + offset_s * 1000):
            x = features(state, now)
            assert len(x) == len(BASE_FEATURES) + 1
            assert all(math.isfinite(v) for v in x.values())
