"""Shared builders for the unit tests of the pure domain package (`models`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from models.events import Event
from models.fold import Fold
from models.journeymap import JourneyMap, load_journey_map

BASE_TIME = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
"""Event time of `make_event(minutes=0)`."""
BASE_MS = int(BASE_TIME.timestamp() * 1000)

_ids = itertools.count(1)

MakeEvent = Callable[..., Event]


def make_event(*, minutes: float = 0, **overrides: Any) -> Event:
    """A valid page_view by customer c1 on the web, `minutes` after `BASE_TIME`.

    Any field can be overridden (`type=`, `properties=`, `timestamp=` ...); `event_id` is
    unique per call unless given.
    """
    data: dict[str, Any] = {
        "event_id": f"e-{next(_ids)}",
        "customer_id": "c1",
        "type": "page_view",
        "channel": "web",
        "timestamp": (BASE_TIME + timedelta(minutes=minutes)).isoformat(),
    }
    data.update(overrides)
    return Event.model_validate(data)


def ms(minutes: float) -> int:
    """Epoch ms of `minutes` after `BASE_TIME` (what `Event.timestamp_ms` gives)."""
    return BASE_MS + int(minutes * 60_000)


@pytest.fixture(name="make_event", scope="session")
def make_event_fixture() -> MakeEvent:
    return make_event


@pytest.fixture(name="ms", scope="session")
def ms_fixture() -> Callable[[float], int]:
    return ms


@pytest.fixture(scope="session")
def retail_map() -> JourneyMap:
    return load_journey_map("retail")


@pytest.fixture(scope="session")
def b2b_map() -> JourneyMap:
    return load_journey_map("b2b")


@pytest.fixture(scope="session")
def fold(retail_map: JourneyMap) -> Fold:
    return Fold(retail_map)
