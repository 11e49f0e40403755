"""What each applied event contributes to the journey analytics, and what a range answers."""

from __future__ import annotations

import doctest
import math
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

import models.analytics
import models.analytics_report
import service.analytics
from models.analytics import (
    Before,
    Fact,
    Recorder,
    bin_seconds,
    duration_bin,
    last_touches,
    moves_on,
    risk_band,
    segment_names,
    segments_of,
    touch_key,
)
from models.analytics_report import channels, friction, funnel, lifts, quantile
from models.events import Event
from models.fold import Fold
from models.journeymap import JourneyMap
from models.state import JourneyState, Touchpoint
from tests.unit.conftest import MakeEvent

HORIZON_MS = 30 * 60_000
ABANDON_MS = 10 * 60_000


def _recorder(journey_map: JourneyMap, touchpoints: int = 3) -> Recorder:
    return Recorder(
        journey_map, horizon_ms=HORIZON_MS, abandon_after_ms=ABANDON_MS, touchpoints=touchpoints
    )


def _facts(fold: Fold, events: list[Event]) -> tuple[list[Fact], JourneyState]:
    """Each event's fact as the consumer takes it: the journey just before, then just after."""
    recorder = _recorder(fold.map)
    state: JourneyState | None = None
    facts = []
    for offset, event in enumerate(events):
        before = Before.of(state)
        state = fold.apply(state, event)
        facts.append(recorder.fact(before, state, event, 0, offset))
    assert state is not None
    return facts, state


def _view(make_event: MakeEvent, minutes: float, product: str = "sku-1", **kw: object) -> Event:
    props = {"product_id": product, "category": "shoes", "price": 20.0}
    return make_event(minutes=minutes, type="product_view", properties=props, **kw)


def _cart(make_event: MakeEvent, minutes: float, kind: str = "add_to_cart") -> Event:
    props = {"product_id": "sku-1", "price": 20.0, "quantity": 1}
    return make_event(minutes=minutes, type=kind, properties=props)


def test_fact_first_event_enters_first_stage_then_the_next_as_an_arrival(
    fold: Fold, make_event: MakeEvent
) -> None:
    [fact], _ = _facts(fold, [_view(make_event, 0, channel="app")])

    assert fact.entered == ["awareness", "consideration"]
    assert set(fact.counts) == {
        "m|new|awareness", "e|awareness", "c|awareness|app", "f|awareness|app", "n|awareness",
        "m|awareness|consideration", "e|consideration", "c|consideration|app",
        "f|consideration|app", "n|consideration",
    }  # fmt: skip
    assert fact.progress == (), "arriving is neither time spent nor progress"


def test_fact_first_page_view_enters_without_moving_on(fold: Fold, make_event: MakeEvent) -> None:
    [fact], _ = _facts(fold, [make_event(minutes=0)])

    assert fact.entered == ["awareness"]
    assert not [c for c in fact.counts if c.startswith("d|")]
    assert fact.progress == ()


def test_fact_move_on_bins_time_in_stage_and_takes_last_touches(
    fold: Fold, make_event: MakeEvent
) -> None:
    events = [_view(make_event, 0), _view(make_event, 1, "sku-2"), _cart(make_event, 10)]

    facts, _ = _facts(fold, events)

    assert "m|consideration|decision" in facts[2].counts
    assert f"d|consideration|{duration_bin(10 * 60_000)}" in facts[2].counts
    assert facts[2].progress == (
        "add_to_cart|web|sku-1", "product_view|web|sku-2", "product_view|web|sku-1",
    )  # fmt: skip
    assert facts[1].counts == []
    assert facts[1].entered == []


def test_fact_move_back_is_neither_progress_nor_a_first_entry(
    fold: Fold, make_event: MakeEvent
) -> None:
    events = [
        _view(make_event, 0), _cart(make_event, 1), _cart(make_event, 2, "remove_from_cart"),
        _cart(make_event, 3),
    ]  # fmt: skip

    facts, _ = _facts(fold, events)

    assert "m|decision|comparison" in facts[2].counts
    assert "n|comparison" in facts[2].counts
    assert facts[2].progress == ()
    assert not [c for c in facts[2].counts if c.startswith("d|")]
    assert facts[2].looped == last_touches(_facts(fold, events[:3])[1], 3)
    assert facts[2].looped[0] == "remove_from_cart|web|sku-1"
    assert facts[3].looped == ()
    assert "m|comparison|decision" in facts[3].counts
    assert "n|decision" not in facts[3].counts
    assert "e|decision" in facts[3].counts


def test_fact_event_after_the_horizon_brings_the_customer_back_from_exit(
    fold: Fold, make_event: MakeEvent
) -> None:
    horizon = HORIZON_MS / 60_000  # minutes; the deadline follows the newest event
    events = [_view(make_event, 0), _view(make_event, horizon), _view(make_event, 2 * horizon + 1)]

    facts, _ = _facts(fold, events)

    assert "m|exit|consideration" not in facts[1].counts  # exactly at the deadline: still here
    assert "m|exit|consideration" in facts[2].counts


def test_fact_deadlines_follow_newest_event_and_last_cart_change(
    fold: Fold, make_event: MakeEvent, ms: Callable[[float], int]
) -> None:
    events = [
        _view(make_event, 0),
        _cart(make_event, 5),
        _view(make_event, 8),
        _view(make_event, 2),
    ]

    facts, _ = _facts(fold, events)

    assert [f.exit_due for f in facts] == [ms(m) + HORIZON_MS for m in (0, 5, 8, 8)]
    cart_due = ms(5) + ABANDON_MS  # the late view at minute 2 changes neither
    assert [f.cart_due for f in facts] == [None, cart_due, cart_due, cart_due]
    assert not facts[1].may_resolve_at(ms(5) + ABANDON_MS)
    assert facts[1].may_resolve_at(ms(5) + ABANDON_MS + 1)


def test_leaving_cart_is_at_checkout_only_after_a_checkout_since_it_opened(
    fold: Fold, make_event: MakeEvent
) -> None:
    recorder = _recorder(fold.map, touchpoints=2)
    early = [make_event(minutes=0, type="checkout_started"), _cart(make_event, 1)]
    _, state = _facts(fold, early)
    _, later = _facts(fold, [*early, make_event(minutes=2, type="checkout_started")])

    earlier, at_checkout = recorder.leaving(state), recorder.leaving(later)

    assert earlier.cart is not None
    assert earlier.cart.where == "earlier"
    assert at_checkout.cart is not None
    assert at_checkout.cart.where == "checkout"
    assert at_checkout.cart.value_cents == 2000
    assert at_checkout.touches == ("checkout_started|web|", "add_to_cart|web|sku-1")
    assert (at_checkout.stage, at_checkout.at) == (later.stage, later.last_event_at)
    assert at_checkout.dwell_bin == duration_bin(later.last_event_at - later.stage_entered_at)


def test_segments_are_first_channel_visitor_and_risk(fold: Fold, make_event: MakeEvent) -> None:
    _, first = _facts(fold, [make_event(minutes=0, channel="email", session_id="s1")])
    _, again = _facts(
        fold,
        [make_event(minutes=0, channel="email", session_id="s1"),
         make_event(minutes=5, channel="web", session_id="s2")],
    )  # fmt: skip
    again.predictions = {"abandonment": {"risk": 0.2}}

    assert segments_of(first) == ("first_channel:email", "visitor:new", "risk:none")
    assert segments_of(again) == ("first_channel:email", "visitor:returning", "risk:low")
    first.first_channel = None
    assert segments_of(first)[0] == "first_channel:unknown"
    assert set(segments_of(first)) | set(segments_of(again)) <= segment_names()


def test_risk_band_bounds_are_exclusive_upper() -> None:
    bands = [risk_band({"abandonment": {"risk": r}}) for r in (0.0, 0.3, 0.69, 0.7, 1.0)]

    assert bands == ["low", "medium", "medium", "high", "high"]
    assert risk_band({"abandonment": None}) == "none"


def test_touch_keys_prefer_the_product_and_drop_page_queries() -> None:
    state = JourneyState("c", "retail", "awareness", 0, 0, 0)
    state.touchpoints = [
        Touchpoint("page_view", "web", 1, None, "https://s.example/a?utm=x"),
        Touchpoint("product_view", "app", 2, "sku-9", "https://s.example/p/9"),
        Touchpoint("page_view", "web", 3, None, "https://s.example/a#top"),
        Touchpoint("search", "web", 4),
    ]

    assert touch_key(state.touchpoints[1]) == "product_view|app|sku-9"
    assert last_touches(state, 3) == (
        "search|web|", "page_view|web|https://s.example/a", "product_view|app|sku-9",
    )  # fmt: skip
    assert last_touches(state, 10)[-1] == "product_view|app|sku-9"


def test_moves_on_only_to_later_stages_of_the_map(retail_map: JourneyMap) -> None:
    assert moves_on(retail_map, "consideration", "purchase")
    assert not moves_on(retail_map, "decision", "comparison")
    assert not moves_on(retail_map, "new", "awareness")
    assert not moves_on(retail_map, "decision", "exit")
    assert moves_on(retail_map, "a_stage_since_removed", "awareness")


@given(st.integers(min_value=1000, max_value=10**11))
def test_duration_bin_stands_for_its_durations_within_an_eighth_doubling(ms: int) -> None:
    value = bin_seconds(duration_bin(ms))

    assert ms / 1000 / 2 ** (1 / 8) - 1e-9 <= value <= ms / 1000 * 2 ** (1 / 8) + 1e-9


@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=200))
def test_quantile_of_binned_durations_is_the_exact_quantiles_bin(durations: list[int]) -> None:
    histogram: dict[int, int] = {}
    for d in durations:
        histogram[duration_bin(d)] = histogram.get(duration_bin(d), 0) + 1
    for q in (0.5, 0.9):
        exact = sorted(durations)[max(1, math.ceil(q * len(durations))) - 1]

        assert quantile(histogram, q) == bin_seconds(duration_bin(exact))


def test_funnel_counts_departures_conversion_and_time_to_move_on(retail_map: JourneyMap) -> None:
    totals = {
        "e|consideration": 10, "n|consideration": 8,
        "m|consideration|decision": 3, "m|consideration|comparison": 2,
        "m|consideration|awareness": 1, "m|consideration|exit": 4,
        f"d|consideration|{duration_bin(60_000)}": 3, f"d|consideration|{duration_bin(600_000)}": 2,
        f"w|consideration|{duration_bin(5_000)}": 3, f"w|consideration|{duration_bin(90_000)}": 1,
    }  # fmt: skip

    stages = {s.stage: s for s in funnel(retail_map, totals, {"consideration": 9})}

    row = stages["consideration"]
    assert (row.entered, row.first_entries, row.customers) == (10, 8, 9)
    assert (row.departures, row.moved_on, row.moved_back, row.exits) == (10, 5, 1, 4)
    assert (row.to_next, row.conversion, row.to_next_rate) == (2, 0.5, 0.2)
    assert row.durations.moves == 5
    assert row.durations.median_s == bin_seconds(duration_bin(60_000))
    assert row.durations.p90_s == bin_seconds(duration_bin(600_000))
    assert row.before_exit.moves == row.exits == 4
    assert row.before_exit.median_s == bin_seconds(duration_bin(5_000))
    assert row.before_exit.p90_s == bin_seconds(duration_bin(90_000))
    assert stages["awareness"].conversion is None


def test_lifts_rank_touchpoints_that_precede_leaving_more_than_progress() -> None:
    touches = {
        "x|page_view|web|/busy": 10, "p|page_view|web|/busy": 50,
        "x|page_view|web|/broken": 6, "p|page_view|web|/broken": 0,
        "x|search|web|": 1,
        "a|add_to_cart|web|sku-1": 2,
    }  # fmt: skip

    ranked = lifts(touches, "x", outcomes=20, progress=99, limit=5, min_count=2)

    assert [t.target for t in ranked] == ["/broken", "/busy"]
    assert ranked[0].lift == (6 / 20) / (1 / 100)
    assert ranked[1].lift == (10 / 20) / (51 / 100)
    assert (ranked[1].count, ranked[1].progress) == (10, 50)
    assert lifts(touches, "x", outcomes=0, progress=99, limit=5, min_count=1) == []
    assert len(lifts(touches, "x", outcomes=20, progress=99, limit=1, min_count=1)) == 1


def test_friction_totals_exits_progress_and_carts() -> None:
    totals = {
        "m|decision|exit": 3, "m|awareness|exit": 2, "m|exit|decision": 1,
        "m|awareness|consideration": 9, "m|decision|comparison": 4,
        "d|awareness|0": 2, "d|awareness|17": 5,
        "a|checkout": 2, "a|earlier": 5, "v|checkout": 1999, "v|earlier": 500,
    }  # fmt: skip
    touches = {"a|add_to_cart|web|sku-1": 4, "x|page_view|web|/": 5}

    found = friction(totals, touches, limit=10, min_count=1)

    assert (found.exits, found.progress) == (5, 7)
    assert found.abandoned == {"checkout": 2, "earlier": 5}
    assert found.abandoned_value_cents == {"checkout": 1999, "earlier": 500}
    assert [t.target for t in found.cart_touches] == ["sku-1"]
    assert found.cart_touches[0].lift == (4 / 7) / (1 / 8)


def test_channels_split_entries_by_entering_and_first_channel() -> None:
    totals = {"e|decision": 5, "c|decision|web": 3, "c|decision|app": 2, "f|decision|email": 5}

    [row] = channels(["decision"], totals)

    assert (row.entered, row.last_touch, row.first_touch) == (
        5, {"web": 3, "app": 2}, {"email": 5},
    )  # fmt: skip


def test_recorder_refuses_nonsense_settings(retail_map: JourneyMap) -> None:
    for horizon, abandon, touchpoints in ((0, 1, 1), (1, 0, 1), (1, 1, 0)):
        try:
            Recorder(
                retail_map, horizon_ms=horizon, abandon_after_ms=abandon, touchpoints=touchpoints
            )
        except ValueError:
            continue
        raise AssertionError("accepted")


def test_analytics_doctests_pass() -> None:
    assert doctest.testmod(models.analytics).failed == 0
    assert doctest.testmod(models.analytics_report).failed == 0
    assert doctest.testmod(service.analytics).failed == 0
