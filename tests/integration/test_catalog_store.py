"""The Redis catalog against its pure reference: the same scores, and each update learned once."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

import pytest

import models.trending
import service.catalog
from models.catalog import Catalog, CatalogUpdate
from service.catalog import CatalogRead, CatalogStore, CatalogView
from tests.integration.catalog_fixtures import (
    CATEGORIES,
    DAY,
    HOUR,
    ITEMS,
    T0,
    Catalogs,
    catalog_fixture,  # noqa: F401 - the `catalog` fixture
    journey,
    update_stream,
)

MIN_SUPPORT = 0.3


def assert_scored(got: Sequence[tuple[str, float]], want: Sequence[tuple[str, float]]) -> None:
    assert [item for item, _ in got] == [item for item, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-9)


def assert_view_agrees(
    view: CatalogView,
    reference: Catalog,
    seeds: Sequence[tuple[str, str]],
    exclude: set[str],
    cart: set[str],
    category: str | None,
) -> None:
    """`view` is what the pure models give for `seeds` ((item, kind)), decayed to the clock."""
    at, kinds = reference.clock or 0, dict(reversed(seeds))
    expected = reference.cooccurrence.recommend([s for s, _ in seeds], at, exclude=exclude, n=8)
    assert_scored([a[:2] for a in view.accessories], [e[:2] for e in expected])
    assert [(a.seed, a.seed_kind) for a in view.accessories] == [
        (seed, kinds[seed]) for _, _, seed in expected
    ]
    assert_scored(view.trending, reference.trending.top(at, 6, exclude=cart))
    assert view.category == category
    in_category = reference.trending.top(at, 6, category, cart) if category else []
    assert_scored(view.category_trending, in_category)


async def learn_both(
    store: CatalogStore, reference: Catalog, updates: Sequence[CatalogUpdate], batch: int
) -> None:
    for start in range(0, len(updates), batch):
        chunk = updates[start : start + batch]
        assert await store.learn(chunk) == reference.learn(chunk)


@pytest.mark.parametrize("renormalise_after", [models.trending.RENORMALISE_AFTER, 2])
async def test_catalog_random_stream_over_weeks_reads_as_pure_models(
    catalog: Catalogs, monkeypatch: pytest.MonkeyPatch, renormalise_after: int
) -> None:
    monkeypatch.setattr(models.trending, "RENORMALISE_AFTER", renormalise_after)
    monkeypatch.setattr(service.catalog, "RENORMALISE_AFTER", renormalise_after)
    rng = random.Random(renormalise_after)
    store, reference = catalog.pair(top_k=6, top_n=4, min_support=MIN_SUPPORT)
    updates = update_stream(rng, carts=150, span_ms=6 * 7 * DAY)

    await learn_both(store, reference, updates, batch=37)

    clock = await catalog.redis.get(f"{catalog.prefix}:{{catalog}}:clock")
    assert clock == str(reference.clock).encode()
    refs = await catalog.redis.hgetall(f"{catalog.prefix}:{{catalog}}:ref")
    first = {u.added[0]: u.at_ms for u in reversed(updates) if u.added}
    moved = sum(int(refs[item.encode()]) > at for item, at in first.items())
    assert (moved > 0) == (renormalise_after == 2)
    # per_seed = top_k: the pure model scores every neighbour it keeps
    template = CatalogRead("", per_seed=6, min_support=MIN_SUPPORT, accessories=8, trending=6)
    requests = [
        replace(template, journey_key=catalog.journey_key("nobody"), product_id=item,
                category=CATEGORIES[i % 4])
        for i, item in enumerate(ITEMS)
    ]  # fmt: skip
    views = await store.read(requests)
    for item, request, view in zip(ITEMS, requests, views, strict=True):
        assert_view_agrees(view, reference, [(item, "viewed")], {item}, set(), request.category)

    now = reference.clock or 0
    cart, bought = ITEMS[3:6], [(ITEMS[7], T0), (ITEMS[8], now)]
    await catalog.put_journey("c", journey(cart, bought, last_event_at=now))
    request = replace(template, journey_key=catalog.journey_key("c"), product_id=ITEMS[0])
    [view] = await store.read([replace(request, max_seeds=6)])
    seeds = [(ITEMS[0], "viewed")] + [(c, "cart") for c in reversed(cart)]
    seeds += [(ITEMS[8], "bought"), (ITEMS[7], "bought")]
    assert_view_agrees(view, reference, seeds, {s for s, _ in seeds}, set(cart), None)
    assert len({a.seed for a in view.accessories}) > 1


async def test_catalog_renormalised_rows_and_scopes_move_their_reference_time(
    catalog: Catalogs,
) -> None:
    store, reference = catalog.pair(pair_half_life_ms=HOUR, trending_half_life_ms=HOUR)
    late = T0 + 65 * HOUR  # past RENORMALISE_AFTER (64) half-lives
    updates = [
        CatalogUpdate(0, 0, T0, ("a",), (), (("a", "shoes", 4.0),)),
        CatalogUpdate(0, 1, T0, ("b",), ("a",), (("b", "shoes", 2.0),)),
        CatalogUpdate(0, 2, late, ("c",), ("b", "a"), (("a", "shoes", 1.0),)),
    ]

    await learn_both(store, reference, updates, batch=3)

    refs = await catalog.redis.hgetall(f"{catalog.prefix}:{{catalog}}:ref")
    assert refs == {b"a": str(late).encode(), b"b": str(late).encode(), b"c": str(late).encode()}
    scopes = await catalog.redis.hgetall(f"{catalog.prefix}:{{catalog}}:topref")
    assert scopes == {b"": str(late).encode(), b"shoes": str(late).encode()}
    [view] = await store.read([CatalogRead(catalog.journey_key("x"), "c", min_support=1e-30)])
    assert_view_agrees(view, reference, [("c", "viewed")], {"c"}, set(), None)


async def test_catalog_learn_same_updates_twice_changes_nothing_the_second_time(
    catalog: Catalogs,
) -> None:
    store, _ = catalog.pair(top_k=5, top_n=3)
    updates = update_stream(random.Random(1), carts=20, span_ms=DAY)
    assert await store.learn(updates) == len(updates)
    before = await catalog.snapshot()

    assert await store.learn(updates) == 0

    assert await catalog.snapshot() == before


async def test_catalog_replay_of_an_old_batch_changes_nothing(catalog: Catalogs) -> None:
    store, _ = catalog.pair()
    updates = update_stream(random.Random(2), carts=20, span_ms=DAY)
    half = len(updates) // 2
    await store.learn(updates[:half])
    await store.learn(updates[half:])
    before = await catalog.snapshot()

    assert await store.learn(updates[:half]) == 0  # a zombie consumer's stale batch

    assert await catalog.snapshot() == before


async def test_catalog_batch_mixing_old_and_new_offsets_applies_only_new_ones(
    catalog: Catalogs,
) -> None:
    store, reference = catalog.pair(top_k=5, top_n=3, min_support=MIN_SUPPORT)
    rng = random.Random(3)

    def update(partition: int, offset: int) -> CatalogUpdate:
        items = rng.sample(ITEMS, 3)
        popularity = ((items[2], rng.choice(CATEGORIES), rng.uniform(1, 2)),)
        at = T0 + offset * HOUR
        return CatalogUpdate(partition, offset, at, (items[0],), (items[1],), popularity)

    first = [update(0, o) for o in range(10)] + [update(1, o) for o in range(5)]
    await learn_both(store, reference, first, batch=len(first))
    # partition 1's offsets out of order, and one position twice: fenced by the stored fence
    mixed = [update(0, o) for o in range(5, 15)] + [update(1, o) for o in (7, 3, 6, 5, 7)]
    mixed += [update(2, o) for o in range(3)]

    applied = await store.learn(mixed)

    assert applied == reference.learn(mixed) == 5 + 3 + 3
    fences = await catalog.redis.hgetall(f"{catalog.prefix}:{{catalog}}:fence")
    assert fences == {b"0": b"14", b"1": b"7", b"2": b"2"}
    [view] = await store.read([CatalogRead(catalog.journey_key("x"), ITEMS[0], min_support=0.3)])
    assert_view_agrees(view, reference, [(ITEMS[0], "viewed")], {ITEMS[0]}, set(), None)


async def test_catalog_pruning_keeps_tied_neighbours_with_smaller_ids(catalog: Catalogs) -> None:
    store, reference = catalog.pair(top_k=2, top_n=1)
    updates = [
        CatalogUpdate(0, 0, T0, ("a",), ("z", "m", "b"), ()),
        *(
            CatalogUpdate(0, 1 + i, T0, (), (), ((item, None, 1.0),))
            for i, item in enumerate("edcb")
        ),
    ]
    await learn_both(store, reference, updates, batch=len(updates))

    pairs = await catalog.redis.zrange(store.pairs_key("a"), 0, -1)
    popular = await catalog.redis.zrange(store.trending_key(), 0, -1)
    # c, d, e tie when the scope first overflows 2 * top_n: the smallest id survives
    assert (pairs, popular) == ([b"b", b"m"], [b"b", b"c"])
    assert reference.trending.top(T0, 10) == [("b", 1.0), ("c", 1.0)]
    assert reference.cooccurrence.neighbours("a", T0) == []  # b, m were never counted


async def test_catalog_clock_tick_moves_clock_and_fence_but_teaches_nothing(
    catalog: Catalogs,
) -> None:
    store, reference = catalog.pair()
    lesson = CatalogUpdate(0, 5, T0, ("a",), (), (("a", None, 1.0),))
    tick = CatalogUpdate(0, 9, T0 + HOUR, (), (), ())
    late_lesson = CatalogUpdate(0, 7, T0 + 2 * HOUR, ("b",), ("a",), ())

    assert await store.learn([lesson, tick]) == reference.learn([lesson, tick]) == 1
    taught = await catalog.snapshot()
    assert await store.learn([late_lesson]) == reference.learn([late_lesson]) == 0  # fenced

    assert await catalog.snapshot() == taught
    assert taught[f"{catalog.prefix}:{{catalog}}:clock".encode()] == str(T0 + HOUR).encode()
    assert reference.clock == T0 + HOUR
    assert reference.fences == {0: 9}
