"""What events teach the catalog: one basket per cart, counted once; the reference fence."""

from __future__ import annotations

import doctest
import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import models.catalog
from models.catalog import Catalog, CatalogUpdate, catalog_update
from models.cooccurrence import CoOccurrence
from models.events import Event
from models.fold import Fold
from models.state import JourneyState
from models.trending import EVENT_WEIGHTS, Trending
from tests.unit.conftest import MakeEvent

HOUR = 3_600_000


def product_event(make_event: MakeEvent, kind: str, product: str | None, **props: Any) -> Event:
    properties = {"product_id": product, **props} if product is not None else props
    return make_event(type=kind, properties=properties)


def run(
    fold: Fold, events: Sequence[Event], **options: Any
) -> tuple[JourneyState | None, list[CatalogUpdate | None]]:
    """Fold `events` from no state, collecting each one's catalog update."""
    state: JourneyState | None = None
    updates = []
    for offset, event in enumerate(events):
        cart = state.cart.items if state is not None else {}
        updates.append(catalog_update(cart, event, 0, offset, **options))
        state = fold.apply(state, event)
    return state, updates


def test_catalog_update_add_to_cart_joins_items_already_in_cart(
    fold: Fold, make_event: MakeEvent
) -> None:
    events = [product_event(make_event, "add_to_cart", p, category="food") for p in ("a", "b", "c")]

    _, updates = run(fold, events)

    assert [(u.added, u.existing) for u in updates if u] == [
        (("a",), ()),
        (("b",), ("a",)),
        (("c",), ("b", "a")),
    ]
    assert updates[2] is not None
    assert updates[2].trending == (("c", "food", EVENT_WEIGHTS["add_to_cart"]),)
    assert (updates[2].partition, updates[2].offset, updates[2].at_ms) == (
        0,
        2,
        events[2].timestamp_ms,
    )


def test_catalog_update_quantity_bump_adds_no_basket_member(
    fold: Fold, make_event: MakeEvent
) -> None:
    events = [
        product_event(make_event, "add_to_cart", "a", category="food"),
        product_event(make_event, "add_to_cart", "a", quantity=2),
    ]

    _, [_, bump] = run(fold, events)

    assert bump is not None
    assert (bump.added, bump.existing) == ((), ())
    assert bump.trending == (("a", "food", EVENT_WEIGHTS["add_to_cart"]),)  # category kept


def test_catalog_update_purchase_of_carted_item_is_popularity_only(
    fold: Fold, make_event: MakeEvent
) -> None:
    events = [
        product_event(make_event, "add_to_cart", "a", category="food"),
        product_event(make_event, "add_to_cart", "b"),
        product_event(make_event, "purchase", "a"),
    ]

    _, updates = run(fold, events)

    assert updates[2] is not None
    assert (updates[2].added, updates[2].existing) == ((), ())
    assert updates[2].trending == (("a", "food", EVENT_WEIGHTS["purchase"]),)


def test_catalog_update_purchase_of_whole_cart_counts_every_item(
    fold: Fold, make_event: MakeEvent
) -> None:
    events = [
        product_event(make_event, "add_to_cart", "a", category="food"),
        product_event(make_event, "add_to_cart", "b"),
        make_event(type="purchase", properties={"order_id": "o-1"}),
    ]

    _, updates = run(fold, events)

    w = EVENT_WEIGHTS["purchase"]
    assert updates[2] is not None
    assert updates[2].added == ()
    assert updates[2].trending == (("a", "food", w), ("b", None, w))


def test_catalog_update_purchase_of_uncarted_item_joins_the_cart_basket(
    fold: Fold, make_event: MakeEvent
) -> None:
    events = [
        product_event(make_event, "add_to_cart", "a"),
        product_event(make_event, "purchase", "x", category="toys"),
    ]

    _, updates = run(fold, events)

    assert updates[1] is not None
    assert (updates[1].added, updates[1].existing) == (("x",), ("a",))
    assert updates[1].trending == (("x", "toys", EVENT_WEIGHTS["purchase"]),)


def test_catalog_update_purchase_without_cart_is_a_basket_of_one(
    fold: Fold, make_event: MakeEvent
) -> None:
    _, [update] = run(fold, [product_event(make_event, "purchase", "x")])

    assert update is not None
    assert (update.added, update.existing) == (("x",), ())
    assert update.trending == (("x", None, EVENT_WEIGHTS["purchase"]),)


def test_catalog_update_empty_purchase_teaches_nothing(fold: Fold, make_event: MakeEvent) -> None:
    _, [update] = run(fold, [make_event(type="purchase")])

    assert update is None


def test_catalog_update_basket_is_capped_keeping_the_latest_items(
    fold: Fold, make_event: MakeEvent
) -> None:
    events = [product_event(make_event, "add_to_cart", f"p{i}") for i in range(6)]

    _, updates = run(fold, events, max_basket=4)

    assert updates[5] is not None
    assert updates[5].added == ("p5",)
    assert updates[5].existing == ("p4", "p3", "p2")


def test_catalog_update_product_view_is_popularity_only(fold: Fold, make_event: MakeEvent) -> None:
    _, [update] = run(fold, [product_event(make_event, "product_view", "a", category="c")])

    assert update is not None
    assert (update.added, update.existing) == ((), ())
    assert update.trending == (("a", "c", EVENT_WEIGHTS["product_view"]),)


def test_catalog_update_other_events_and_zero_weights_teach_nothing(
    fold: Fold, make_event: MakeEvent
) -> None:
    events = [
        make_event(type="page_view"),
        product_event(make_event, "remove_from_cart", "a"),
        product_event(make_event, "product_view", "a"),
    ]

    _, updates = run(fold, events, weights={"product_view": 0.0})

    assert updates == [None, None, None]


def test_catalog_update_remove_then_add_again_is_a_new_basket(
    fold: Fold, make_event: MakeEvent
) -> None:
    events = [
        product_event(make_event, "add_to_cart", "a"),
        product_event(make_event, "remove_from_cart", "a"),
        product_event(make_event, "add_to_cart", "b"),
    ]

    _, updates = run(fold, events)

    assert updates[2] is not None
    assert (updates[2].added, updates[2].existing) == (("b",), ())


def everything(model: CoOccurrence, items: Sequence[str], at_ms: int) -> dict[str, object]:
    """Every item's full neighbour list, and the row count: the model's whole visible state."""
    return {
        "rows": len(model),
        **{item: model.neighbours(item, at_ms, n=1000) for item in items},
    }


carts = st.lists(st.lists(st.sampled_from("abcdefghij"), min_size=1, max_size=8), max_size=6)


@settings(max_examples=80, deadline=None)
@given(history=carts, carts=carts, at=st.integers(0, 300 * HOUR))
def test_learn_addition_cart_built_item_by_item_equals_learn_basket(
    history: list[list[str]], carts: list[list[str]], at: int
) -> None:
    whole, stepwise = (CoOccurrence(half_life_ms=HOUR, min_support=0.0) for _ in range(2))
    for k, basket in enumerate(history):  # some earlier state, with decay and renormalisation
        for model in (whole, stepwise):
            model.learn_basket(basket, at_ms=k * 40 * HOUR)
    for cart in carts:
        whole.learn_basket(cart, at)
        built: list[str] = []
        for item in dict.fromkeys(cart):
            stepwise.learn_addition([item], built[::-1], at)
            built.append(item)

    assert everything(stepwise, "abcdefghij", at) == everything(whole, "abcdefghij", at)


def test_learn_addition_existing_item_never_counted_gets_no_pair() -> None:
    model = CoOccurrence(half_life_ms=HOUR, min_support=0.0)

    model.learn_addition(["new"], ["unknown"], at_ms=0)

    assert model.neighbours("unknown", at_ms=0) == []
    assert model.neighbours("new", at_ms=0) == []  # `unknown` has no count to normalise by
    assert len(model) == 1


def test_learn_addition_doctests_and_reference_doctests_pass() -> None:
    assert doctest.testmod(models.catalog).failed == 0


def random_update(rng: random.Random, partition: int, offset: int) -> CatalogUpdate:
    items = [f"i{rng.randrange(8)}" for _ in range(3)]
    return CatalogUpdate(
        partition, offset, rng.randrange(10 * HOUR), (items[0],), (items[1],),
        ((items[2], "c", rng.random()),),
    )  # fmt: skip


def test_catalog_learn_twice_applies_each_update_once() -> None:
    rng = random.Random(7)
    updates = [random_update(rng, p, o) for o in range(5) for p in (0, 1)]
    once, twice = (
        Catalog(CoOccurrence(half_life_ms=HOUR), Trending(half_life_ms=HOUR)) for _ in range(2)
    )

    assert once.learn(updates) == 10
    assert (twice.learn(updates), twice.learn(updates), twice.learn(updates[:4])) == (10, 0, 0)

    assert twice.fences == once.fences == {0: 4, 1: 4}
    assert twice.trending.top(at_ms=10 * HOUR) == once.trending.top(at_ms=10 * HOUR)


def test_catalog_learn_fences_against_the_start_of_the_call() -> None:
    rng = random.Random(8)
    catalog = Catalog(CoOccurrence(half_life_ms=HOUR), Trending(half_life_ms=HOUR))
    catalog.learn([random_update(rng, 0, 5)])

    # offsets out of order within a call all apply; a repeated position applies once
    batch = [random_update(rng, 0, o) for o in (9, 7, 3, 7)]

    assert catalog.learn(batch) == 2
    assert catalog.fences == {0: 9}


@pytest.mark.parametrize(("max_basket", "kept"), [(2, ["c"]), (3, ["b", "c"])])
def test_learn_addition_basket_over_max_keeps_the_first_existing_items(
    max_basket: int, kept: list[str]
) -> None:
    model = CoOccurrence(half_life_ms=HOUR, min_support=0.0, max_basket=max_basket)
    for item in "abc":
        model.learn_addition([item], [], at_ms=0)

    model.learn_addition(["d"], ["c", "b", "a"], at_ms=0)

    assert [b for b, _ in model.neighbours("d", at_ms=0, n=10)] == kept
