"""What an applied event teaches the catalog models, and the pure reference that learns it.

`catalog_update` turns one event the fold applies (with the cart as it was before) into
a `CatalogUpdate`: the basket members it adds to co-occurrence and the popularity it adds to
trending. A cart is one basket, counted exactly once however it is built: each product added
joins the products already in the cart, and a purchase adds only what the cart did not hold.
A product removed from the cart stays counted: it was carted with the others.

`Catalog` applies updates to the pure models behind a per-partition offset fence, the same
rules `service.catalog` runs in Redis, so tests can compare the two.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from models.cooccurrence import CoOccurrence
from models.events import Event
from models.state import CartItem
from models.trending import EVENT_WEIGHTS, Trending

Popularity = tuple[str, str | None, float]
"""`(item, category, weight)`: one popularity increment."""


@dataclass(frozen=True, slots=True)
class CatalogUpdate:
    """One event's lesson for the catalog; `(partition, offset)` fences it to once."""

    partition: int
    offset: int
    at_ms: int
    added: tuple[str, ...]
    """Items newly in a basket: `n(a) += 1`, `c(a, x) += 1` for every other `x` in the basket."""
    existing: tuple[str, ...]
    """Items already counted in that basket: `c(b, a) += 1` for each added `a`; `n(b)` kept."""
    trending: tuple[Popularity, ...]


def catalog_update(
    cart: dict[str, CartItem],
    event: Event,
    partition: int,
    offset: int,
    *,
    weights: Mapping[str, float] = EVENT_WEIGHTS,
    max_basket: int = 50,
) -> CatalogUpdate | None:
    """The catalog's lesson from `event`, given the cart as it was just before the event.

    Computed before the fold applies the event (the consumer folds in place) and kept only if
    the fold applies it. `existing` lists the other products in the cart before, most recently
    added first, cut so the basket holds at most `max_basket` items. None when the event
    teaches nothing.
    """
    kind, props = event.type, event.properties
    product = props.product_id
    added: tuple[str, ...] = ()
    existing: tuple[str, ...] = ()
    if kind == "product_view":
        popular = [(product, props.category)] if product is not None else []
    elif kind == "add_to_cart" and product is not None:
        if product not in cart:
            added, existing = (product,), _recent_first(cart, max_basket - 1)
        carted = cart.get(product)
        popular = [(product, props.category or (carted.category if carted else None))]
    elif kind == "purchase":
        if product is None:  # the whole cart was bought, and learned as it was built
            popular = [(item.product_id, item.category) for item in cart.values()]
        else:
            carted = cart.get(product)
            if carted is None:
                added, existing = (product,), _recent_first(cart, max_basket - 1)
            popular = [(product, (carted.category if carted else None) or props.category)]
    else:
        return None
    trending = _weighted(popular, weights.get(kind, 0.0))
    if not added and not trending:
        return None
    return CatalogUpdate(partition, offset, event.timestamp_ms, added, existing, trending)


def _recent_first(cart: dict[str, CartItem], limit: int) -> tuple[str, ...]:
    """Cart product ids, most recently added first (the fold keeps them in order added)."""
    return tuple(reversed(cart))[: max(limit, 0)]


def _weighted(items: Iterable[tuple[str, str | None]], weight: float) -> tuple[Popularity, ...]:
    if weight <= 0.0:
        return ()
    return tuple((item, category, weight) for item, category in items)


class Catalog:
    """The pure reference of the Redis catalog: both models behind an offset fence.

    `learn` applies, in order, every update whose offset is above its partition's fence as it
    stood before the call (each position once), then raises the fences; `clock` is the newest
    event time learned, the time reads decay to.

    >>> catalog = Catalog(CoOccurrence(half_life_ms=1000), Trending(half_life_ms=1000))
    >>> update = CatalogUpdate(0, 7, 500, ("a",), ("b",), (("a", None, 3.0),))
    >>> catalog.learn([update]), catalog.learn([update]), catalog.clock
    (1, 0, 500)
    """

    def __init__(self, cooccurrence: CoOccurrence, trending: Trending) -> None:
        self.cooccurrence = cooccurrence
        self.trending = trending
        self.fences: dict[int, int] = {}
        self.clock: int | None = None

    def learn(self, updates: Sequence[CatalogUpdate]) -> int:
        """Apply the updates not yet applied; returns how many were."""
        fences = dict(self.fences)
        done: set[tuple[int, int]] = set()
        for update in updates:
            position = (update.partition, update.offset)
            if update.offset <= self.fences.get(update.partition, -1) or position in done:
                continue
            done.add(position)
            self._apply(update)
            fences[update.partition] = max(fences.get(update.partition, -1), update.offset)
        self.fences = fences
        return len(done)

    def _apply(self, update: CatalogUpdate) -> None:
        at = update.at_ms
        if update.added:
            self.cooccurrence.learn_addition(update.added, update.existing, at)
        for item, category, weight in update.trending:
            self.trending.learn(item, category or None, weight, at)  # "": no category
        self.clock = at if self.clock is None else max(self.clock, at)
