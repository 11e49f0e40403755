"""The state consumer's catalog duty: what each applied event teaches co-occurrence and trending.

A lesson is taken from the cart as it was just before the event (the fold then changes it in
place) and kept only if the fold applied the event. A chunk's lessons are learned in one
fenced script call before its journeys are written (chunks in log order): a crash in between
repeats the call on redelivery, and the per-partition offset fence makes the repeat a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from aiokafka.structs import ConsumerRecord

from models.catalog import CatalogUpdate, catalog_update
from models.events import Event
from models.state import CartItem
from service.catalog import CatalogStore
from service.metrics import ConsumerMetrics

TEACHING_TYPES: Final = frozenset({"product_view", "add_to_cart", "purchase"})
"""The only event types `catalog_update` learns from; the rest skip the call entirely."""


class CatalogLearning:
    """Lessons per event, learned per batch; see the module docstring."""

    def __init__(self, store: CatalogStore, metrics: ConsumerMetrics, *, max_basket: int) -> None:
        self._store = store
        self._metrics = metrics
        self._max_basket = max_basket

    def lesson(
        self, cart: dict[str, CartItem], event: Event, partition: int, offset: int
    ) -> CatalogUpdate | None:
        if event.type not in TEACHING_TYPES:
            return None
        return catalog_update(cart, event, partition, offset, max_basket=self._max_basket)

    async def learn(
        self, lessons: Sequence[CatalogUpdate], applied: Iterable[tuple[Event, ConsumerRecord]]
    ) -> None:
        """Apply the lessons exactly once; raises `StoreUnavailable` if Redis cannot.

        Every applied event moves the catalog's clock (the event-time "now" of reads), lesson
        or not: one empty update per partition carries the batch's newest time and offset.
        """
        newest: dict[int, tuple[int, int]] = {}
        for event, record in applied:
            offset, t = newest.get(record.partition, (-1, -1))
            newest[record.partition] = (max(offset, record.offset), max(t, event.timestamp_ms))
        ticks = [CatalogUpdate(p, o, t, (), (), ()) for p, (o, t) in newest.items()]
        if lessons or ticks:
            self._metrics.catalog_updates.inc(await self._store.learn([*lessons, *ticks]))
