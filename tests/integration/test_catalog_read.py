"""Reading recommendations from the Redis catalog: seeds, exclusions, categories, round trips."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

import orjson
from redis.asyncio import Connection, ConnectionPool, Redis

from models.catalog import CatalogUpdate
from models.recommend import Accessory
from models.state import SCHEMA_VERSION, encode_state
from service.catalog import JOURNEY_FIELDS, CatalogRead, CatalogStore, CatalogView
from tests.integration.catalog_fixtures import (
    DAY,
    T0,
    Catalogs,
    catalog_fixture,  # noqa: F401 - the `catalog` fixture
    journey,
)


def baskets(*carts: Sequence[str], at: int = T0) -> list[CatalogUpdate]:
    """Each cart built item by item at `at`, on partition 0."""
    updates: list[CatalogUpdate] = []
    for cart in carts:
        for i, item in enumerate(cart):
            existing = tuple(reversed(cart[:i]))
            updates.append(CatalogUpdate(0, len(updates), at, (item,), existing, ()))
    return updates


def popularity(*scored: tuple[str, str | None, float]) -> list[CatalogUpdate]:
    """One popularity increment per update at `T0`, on partition 1."""
    return [CatalogUpdate(1, i, T0, (), (), (s,)) for i, s in enumerate(scored)]


def suggested(view: CatalogView) -> list[tuple[str, str, str]]:
    return [(a.product_id, a.seed, a.seed_kind) for a in view.accessories]


async def test_catalog_read_excludes_seeds_cart_and_recent_purchases_only(
    catalog: Catalogs,
) -> None:
    store, _ = catalog.pair()
    await store.learn(baskets(["p", "carted", "recent", "old", "other"]))
    state = journey(["carted"], [("old", T0 - 60 * DAY), ("recent", T0 - DAY)], last_event_at=T0)
    await catalog.put_journey("c", state)
    request = CatalogRead(catalog.journey_key("c"), "p", max_seeds=2, min_support=0.5)

    [view, wider] = await store.read([request, replace(request, bought_window_ms=90 * DAY)])

    # seeds p and carted; recent was bought a day ago; old, bought 60 days ago, may come back
    assert view.accessories == (
        Accessory("old", 2.0, "p", "viewed"),
        Accessory("other", 2.0, "p", "viewed"),
    )
    assert suggested(wider) == [("other", "p", "viewed")]


async def test_catalog_read_seeds_viewed_then_cart_then_bought_latest_first_up_to_cap(
    catalog: Catalogs,
) -> None:
    store, _ = catalog.pair()
    seeds = ["v", "c1", "c2", "c3", "b1", "b2"]
    await store.learn(baskets(*([s, f"with-{s}"] for s in seeds)))
    bought = [("b1", T0 - 2 * DAY), ("b2", T0 - DAY)]
    raw = await catalog.put_journey("c", journey(["c1", "c2", "c3"], bought))
    request = CatalogRead(catalog.journey_key("c"), "v", min_support=0.5)

    views = await store.read([replace(request, max_seeds=n) for n in (1, 4, 5, 6)])

    kinds = {"v": "viewed", "c3": "cart", "c2": "cart", "c1": "cart", "b2": "bought"}
    kinds["b1"] = "bought"
    expected = [("v", "c3", "c2", "c1", "b2", "b1")[:n] for n in (1, 4, 5, 6)]
    for view, used in zip(views, expected, strict=True):
        assert view.journey == raw  # as stored: the API needs no other read
        assert suggested(view) == sorted((f"with-{s}", s, kinds[s]) for s in used)
    [again] = await store.read([replace(request, product_id="c2", max_seeds=2)])
    assert suggested(again) == [("with-c2", "c2", "viewed"), ("with-c3", "c3", "cart")]


async def test_catalog_read_credits_the_strongest_seed_and_sums_over_seeds(
    catalog: Catalogs,
) -> None:
    store, _ = catalog.pair()
    await store.learn(baskets(["a", "both", "only-a"], ["b", "both"], ["b", "both"], ["b", "x"]))
    await catalog.put_journey("c", journey(["b"]))

    [view] = await store.read([CatalogRead(catalog.journey_key("c"), "a", min_support=0.5)])

    # both: 1/sqrt(1*3) from a plus 2/sqrt(3*3) from b; only-a: 1/sqrt(1*1); x: 1/sqrt(3*1)
    assert [(a.product_id, round(a.score, 6), a.seed) for a in view.accessories] == [
        ("both", round(3**-0.5 + 2 / 3, 6), "b"),
        ("only-a", 1.0, "a"),
        ("x", round(3**-0.5, 6), "b"),
    ]


async def test_catalog_read_unknown_customer_gets_product_accessories_and_trending(
    catalog: Catalogs,
) -> None:
    store, _ = catalog.pair()
    await store.learn(baskets(["p", "q"]))
    await store.learn(popularity(("q", "shoes", 2.0), ("r", "bags", 3.0)))
    request = CatalogRead(catalog.journey_key("never-seen"), "p", min_support=0.5)

    [plain, in_shoes] = await store.read([request, replace(request, category="shoes")])

    assert (plain.journey, suggested(plain)) == (None, [("q", "p", "viewed")])
    assert plain.trending == in_shoes.trending == (("r", 3.0), ("q", 2.0))
    assert (plain.category, plain.category_trending) == (None, ())
    assert (in_shoes.category, in_shoes.category_trending) == ("shoes", (("q", 2.0),))


async def test_catalog_read_category_falls_back_to_most_viewed_and_skips_cart_items(
    catalog: Catalogs,
) -> None:
    store, _ = catalog.pair()
    await store.learn(popularity(("s1", "shoes", 4.0), ("b1", "bags", 3.0), ("b2", "bags", 1.0)))
    views = {"shoes": 3, "hats": 5, "bags": 5}  # hats and bags tie: the smaller name wins
    await catalog.put_journey("c", journey(["b1"], category_views=views))
    request = CatalogRead(catalog.journey_key("c"), trending=2)

    [fallback, asked] = await store.read([request, replace(request, category="shoes")])

    assert (fallback.category, fallback.category_trending) == ("bags", (("b2", 1.0),))
    assert fallback.trending == (("s1", 4.0), ("b2", 1.0))
    assert (asked.category, asked.category_trending) == ("shoes", (("s1", 4.0),))


async def test_catalog_read_ids_with_any_characters_round_trip(catalog: Catalogs) -> None:
    store, _ = catalog.pair()
    odd = ["a:b:c", "ünï côdé", "漢字", "pairs:x", "top", 'say "hi" \\o/', "emoji 🛒"]
    await store.learn(baskets(odd))
    await store.learn(popularity(*((item, "cat:é 1", 1.0 + i) for i, item in enumerate(odd))))
    await catalog.put_journey("é:c", journey([odd[5]]))
    request = CatalogRead(catalog.journey_key("é:c"), "漢字", "cat:é 1", min_support=0.5)

    [view] = await store.read([request])

    assert {(a.product_id, a.seed) for a in view.accessories} == {
        (item, "漢字") for item in odd if item not in ("漢字", odd[5])
    }
    assert [item for item, _ in view.category_trending[:3]] == ["emoji 🛒", "top", "pairs:x"]


async def test_catalog_read_unreadable_journey_is_returned_but_gives_no_seeds(
    catalog: Catalogs,
) -> None:
    store, _ = catalog.pair()
    await store.learn(baskets(["p", "q"], ["carted", "z"]))
    await catalog.redis.set(catalog.journey_key("c"), b"4 {not json")

    [view] = await store.read([CatalogRead(catalog.journey_key("c"), "p", min_support=0.5)])

    assert (view.journey, suggested(view)) == (b"4 {not json", [("q", "p", "viewed")])


class CountingConnection(Connection):
    """A real connection that counts its writes to the socket: one per round trip."""

    sends: ClassVar[list[int]] = []

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        self.sends.append(1)
        await super().send_packed_command(command, check_health)


async def commandstats(redis: Redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {name: row["calls"] for name, row in stats.items() if name != "cmdstat_info"}


async def test_catalog_read_of_many_requests_is_one_round_trip_of_script_calls(
    catalog: Catalogs, redis_url: str
) -> None:
    pool = ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    counted = Redis(connection_pool=pool)
    store = CatalogStore(
        counted, prefix=catalog.prefix, pair_half_life_ms=DAY, trending_half_life_ms=DAY
    )
    await store.learn(baskets(["p", "q"]))
    requests = [CatalogRead(catalog.journey_key(c), "p") for c in ("a", "b", "c")]
    await store.read(requests)  # connects, and loads the script if the server lacks it
    before, CountingConnection.sends[:] = await commandstats(counted), []

    await store.read(requests)

    sends = len(CountingConnection.sends)
    after = await commandstats(counted)
    assert sends == 1
    changed = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k)}
    # commands run inside the scripts count too: only reads, so the script wrote nothing
    inside = {f"cmdstat_{c}" for c in ("get", "hget", "hmget", "zrevrange", "zrevrangebyscore")}
    assert changed.pop("cmdstat_evalsha") == 3
    assert set(changed) <= inside
    await counted.script_flush()
    assert len(await store.read(requests)) == 3  # a flushed script is loaded again
    await counted.aclose()


def test_journey_wire_form_keeps_the_fields_the_read_script_reads() -> None:
    state = journey(["a", "b"], [("x", 5), ("y", 7)], last_event_at=9, category_views={"s": 2})

    data = orjson.loads(encode_state(state))

    assert set(JOURNEY_FIELDS) <= set(data)
    assert data["v"] == SCHEMA_VERSION
    assert data["last_event_at"] == 9
    assert [item[0] for item in data["cart"][0]] == ["a", "b"]
    assert data["purchases"][5] == [["x", 5], ["y", 7]]
    assert data["category_views"] == {"s": 2}


async def test_catalog_read_per_seed_cut_through_ties_keeps_smaller_ids(
    catalog: Catalogs,
) -> None:
    store, _ = catalog.pair()
    await store.learn(baskets(["p", "z", "m", "b", "y"], ["y", "q"]))
    request = CatalogRead(catalog.journey_key("c"), "p", per_seed=2, min_support=0.5)

    [view] = await store.read([request])

    # z, m, b, y tie on pair count; b and m are taken, then ranked by cosine
    assert suggested(view) == [("b", "p", "viewed"), ("m", "p", "viewed")]
