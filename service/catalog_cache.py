"""A per-process, time-limited cache of the catalog for the recommendations API.

A product's neighbours and a category's trending list change slowly next to how often pages
ask for them, and hot products are asked for on most pages: caching them turns a page view
into one Redis GET (the journey) in the common case, instead of a script that scores
neighbours inside Redis on every request.

An entry is fresh for `ttl_s`. For `stale_s` after that it is still served, and refetched in
the background (stale-while-revalidate): a long-tail product asked for less often than the
TTL does not make its page wait for a script call, and the refetches of many such entries
share one call. Entries older than both, and entries never fetched, are fetched before
answering, all in one script call (with any stale ones riding along). The cache holds at most
`max_entries` items and scopes, dropping the oldest first. Answers may lag the catalog by up
to `ttl_s` for entries asked for often, and never by more than `ttl_s + stale_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from service.catalog import CatalogStore

logger = logging.getLogger(__name__)

K = TypeVar("K")
Scored = tuple[tuple[str, float], ...]


class _Expiring(Generic[K]):
    """Values with a fetch time; insertion order is age order (re-fetched entries move last)."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._entries: dict[K, tuple[float, Scored]] = {}

    def split(
        self, keys: Iterable[K], now: float, ttl_s: float, max_age_s: float
    ) -> tuple[dict[K, Scored], list[K], list[K]]:
        """The servable values of `keys` (each once), the keys to fetch before answering
        (absent or older than `max_age_s`), and the servable ones older than `ttl_s`."""
        found: dict[K, Scored] = {}
        missing: list[K] = []
        stale: list[K] = []
        for key in dict.fromkeys(keys):
            hit = self._entries.get(key)
            age = now - hit[0] if hit is not None else max_age_s
            if hit is None or age >= max_age_s:
                missing.append(key)
                continue
            found[key] = hit[1]
            if age >= ttl_s:
                stale.append(key)
        return found, missing, stale

    def put(self, key: K, value: Scored, now: float) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (now, value)
        while len(self._entries) > self._max:
            del self._entries[next(iter(self._entries))]

    def __len__(self) -> int:
        return len(self._entries)


class CatalogCache:
    """Neighbours per product and trending per scope (`None`: overall); see the module."""

    def __init__(
        self,
        store: CatalogStore,
        *,
        ttl_s: float,
        max_entries: int,
        per_seed: int,
        min_support: float,
        trending: int,
        stale_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._max_age_s = ttl_s + stale_s
        self._per_seed = per_seed
        self._min_support = min_support
        self._trending = trending
        self._clock = clock
        self._neighbours: _Expiring[str] = _Expiring(max_entries)
        self._scopes: _Expiring[str | None] = _Expiring(max_entries)
        self._catalog_clock: tuple[float, int] = (-float("inf"), 0)
        self._due_items: set[str] = set()  # stale, to refetch in the background
        self._due_scopes: set[str | None] = set()
        self._due_clock = False
        self._refetching: asyncio.Task[None] | None = None

    @property
    def clock_ms(self) -> int:
        """The catalog's event-time clock as of the latest fetch."""
        return self._catalog_clock[1]

    async def fetch(
        self, items: Iterable[str], scopes: Iterable[str | None]
    ) -> tuple[dict[str, Scored], dict[str | None, Scored]]:
        """Every item's neighbours and every scope's trending list; one script call for the
        missing or expired ones (none when all are servable and the clock is too)."""
        now, ttl, max_age = self._clock(), self._ttl_s, self._max_age_s
        neighbours, want_items, stale_items = self._neighbours.split(items, now, ttl, max_age)
        trending, want_scopes, stale_scopes = self._scopes.split(scopes, now, ttl, max_age)
        clock_age = now - self._catalog_clock[0]
        self._due_items.update(stale_items)
        self._due_scopes.update(stale_scopes)
        self._due_clock |= clock_age >= ttl
        if want_items or want_scopes or clock_age >= max_age:
            due_items, due_scopes = self._take_due()  # the stale ones ride along
            fetched, fetched_scopes = await self._fetch(
                [*want_items, *due_items.difference(want_items)],
                [*want_scopes, *due_scopes.difference(want_scopes)],
                now,
            )
            _answer(neighbours, want_items, fetched)
            _answer(trending, want_scopes, fetched_scopes)
        elif self._due_items or self._due_scopes or self._due_clock:
            self._refetch_in_background()
        return neighbours, trending

    async def settled(self) -> None:
        """Wait for a background refetch in flight, if any (its failure is only logged)."""
        if self._refetching is not None:
            await asyncio.gather(self._refetching, return_exceptions=True)

    async def aclose(self) -> None:
        """Stop a background refetch in flight (at shutdown)."""
        task, self._refetching = self._refetching, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _take_due(self) -> tuple[set[str], set[str | None]]:
        items, scopes = self._due_items, self._due_scopes
        self._due_items, self._due_scopes, self._due_clock = set(), set(), False
        return items, scopes

    async def _fetch(
        self, items: list[str], scopes: list[str | None], now: float
    ) -> tuple[dict[str, Scored], dict[str | None, Scored]]:
        got = await self._store.neighbourhood(
            items, scopes, per_seed=self._per_seed,
            min_support=self._min_support, trending=self._trending,
        )  # fmt: skip
        self._catalog_clock = (now, got.clock_ms)
        for item, scored in got.neighbours.items():
            self._neighbours.put(item, scored, now)
        for scope, scored in got.trending.items():
            self._scopes.put(scope, scored, now)
        return got.neighbours, got.trending

    def _refetch_in_background(self) -> None:
        """One refetch at a time; entries that go stale meanwhile wait for the next."""
        if self._refetching is None or self._refetching.done():
            self._refetching = asyncio.create_task(self._refetch())

    async def _refetch(self) -> None:
        if not (self._due_items or self._due_scopes or self._due_clock):
            return  # a fetch before an answer took them along meanwhile
        items, scopes = self._take_due()
        try:
            await self._fetch(sorted(items), list(scopes), self._clock())
        except Exception:  # the entries stay servable until they expire for good
            logger.warning("catalog cache refetch of %d entries failed", len(items), exc_info=True)


def _answer(found: dict[K, Scored], wanted: list[K], fetched: dict[K, Scored]) -> None:
    """Complete `found` with the wanted keys, and the newer value of those it holds stale."""
    for key in wanted:
        found[key] = fetched[key]
    for key in found.keys() & fetched.keys():
        found[key] = fetched[key]
