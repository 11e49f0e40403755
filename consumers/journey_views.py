"""The journeys a state consumer wrote, kept decoded, so a later batch need not decode them.

Decoding a journey costs more than folding an event onto it. A partition has one writer at a
time, so a journey this consumer wrote is usually what Redis still holds when the customer's
next event comes: the batch then folds onto the state it kept. It still reads every journey
from Redis, and uses a kept state only when the stored form read is byte for byte the one the
state was encoded to: whatever changed a journey behind the consumer's back (the deadline
sweep, an erasure, another writer after a rebalance) makes it decode what it read instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice

from models.state import JourneyState, decode_state
from service.store import Stored


@dataclass(slots=True, eq=False)  # identity: the decoded state is handed out once
class View:
    """A journey as stored (or as this consumer wrote it) and, until a fold takes it, the
    decoded state equal to that stored form."""

    stored: Stored
    decoded: JourneyState | None = None

    def take(self) -> JourneyState | None:
        """The journey as a state of the caller's own, to change in place: the decoded state
        the first time (nobody else holds it), else decoded anew from the stored form."""
        state, self.decoded = self.decoded, None
        if state is None and self.stored.state is not None:
            state = decode_state(self.stored.state)
        return state


class KnownJourneys:
    """The decoded journeys of the last `capacity` customers written, the least recently
    written dropped first (0 keeps none)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self._capacity = capacity
        self._views: dict[str, View] = {}

    def __len__(self) -> int:
        return len(self._views)

    def view(self, customer: str, stored: Stored) -> View:
        """A view of the journey just read as `stored`, holding the state kept for it if that
        state was encoded to exactly the bytes read (the kept state moves to the view)."""
        kept = self._views.pop(customer, None)
        if kept is not None and kept.decoded is not None and kept.stored.state == stored.state:
            decoded, kept.decoded = kept.decoded, None
            return View(stored, decoded)
        return View(stored)

    def remember(self, views: Iterable[tuple[str, View]]) -> None:
        """Keep the decoded states of `views` (those no fold has taken yet)."""
        if not self._capacity:
            return
        known = self._views
        for customer, view in views:
            if view.decoded is not None:
                known.pop(customer, None)  # re-inserted last: the most recently written
                known[customer] = view
        excess = len(known) - self._capacity
        if excess > 0:
            for customer in list(islice(known, excess)):
                del known[customer]

    def clear(self) -> None:
        self._views.clear()
