"""A per-process, time-limited cache of the catalog for the recommendations API.

A product's neighbours and a category's trending list change slowly next to how often pages
ask for them, and hot products are asked for on most pages: caching them for a few seconds
turns a page view into one Redis GET (the journey) in the common case, instead of a script
that scores neighbours inside Redis on every request. Entries older than `ttl_s` are fetched
again, all missing ones in one script call; the cache holds at most `max_entries` items and
scopes, dropping the oldest first. Answers may lag the catalog by up to `ttl_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from service.catalog import CatalogStore

K = TypeVar("K")
Scored = tuple[tuple[str, float], ...]


class _Expiring(Generic[K]):
    """Values with a fetch time; insertion order is age order (re-fetched entries move last)."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: dict[K, tuple[float, Scored]] = {}

    def fresh(self, key: K, now: float, ttl_s: float) -> Scored | None:
        hit = self._entries.get(key)
        return hit[1] if hit is not None and now - hit[0] < ttl_s else None

    def split(self, keys: Iterable[K], now: float, ttl_s: float) -> tuple[dict[K, Scored], list[K]]:
        """The fresh values of `keys` (each once), and the keys to fetch."""
        found: dict[K, Scored] = {}
        missing: list[K] = []
        for key in dict.fromkeys(keys):
            hit = self.fresh(key, now, ttl_s)
            if hit is None:
                missing.append(key)
            else:
                found[key] = hit
        return found, missing

    def put(self, key: K, value: Scored, now: float) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (now, value)
        while len(self._entries) > self._max:
            del self._entries[next(iter(self._entries))]

    def __len__(self) -> int:
        return len(self._entries)


class CatalogCache:
    """Neighbours per product and trending per scope (`None`: overall), `ttl_s` fresh."""

    def __init__(
        self,
        store: CatalogStore,
        *,
        ttl_s: float,
        max_entries: int,
        per_seed: int,
        min_support: float,
        trending: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._per_seed = per_seed
        self._min_support = min_support
        self._trending = trending
        self._clock = clock
        self._neighbours: _Expiring[str] = _Expiring(max_entries)
        self._scopes: _Expiring[str | None] = _Expiring(max_entries)
        self._catalog_clock: tuple[float, int] = (-float("inf"), 0)

    @property
    def clock_ms(self) -> int:
        """The catalog's event-time clock as of the latest fetch."""
        return self._catalog_clock[1]

    async def fetch(
        self, items: Iterable[str], scopes: Iterable[str | None]
    ) -> tuple[dict[str, Scored], dict[str | None, Scored]]:
        """Every item's neighbours and every scope's trending list; one script call for the
        missing or stale ones (none when all are fresh and the clock is too)."""
        now, ttl = self._clock(), self._ttl_s
        neighbours, want_items = self._neighbours.split(items, now, ttl)
        trending, want_scopes = self._scopes.split(scopes, now, ttl)
        stale_clock = now - self._catalog_clock[0] >= ttl
        if want_items or want_scopes or stale_clock:
            got = await self._store.neighbourhood(
                want_items, want_scopes, per_seed=self._per_seed,
                min_support=self._min_support, trending=self._trending,
            )  # fmt: skip
            self._catalog_clock = (now, got.clock_ms)
            for item, scored in got.neighbours.items():
                self._neighbours.put(item, scored, now)
                neighbours[item] = scored
            for scope, scored in got.trending.items():
                self._scopes.put(scope, scored, now)
                trending[scope] = scored
        return neighbours, trending
