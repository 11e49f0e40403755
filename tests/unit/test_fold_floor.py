"""The floor benchmark times the consumer's own steps: its stored journeys are the fold's, and a
timed run reads them without changing them, so every run measures the same work."""

from __future__ import annotations

import time

from bench.consumer_throughput import events
from bench.fold_floor import PHASES, stored_journeys, timed_run
from models.events import Event
from models.fold import Position
from models.journeymap import load_journey_map
from models.state import encode_state
from service.journey import build_decoder, build_fold
from service.settings import JourneySettings


def test_stored_journeys_are_the_fold_of_each_customers_events_and_runs_leave_them_alone() -> None:
    settings = JourneySettings()
    journey_map = load_journey_map(settings.map)
    decoder, fold = build_decoder(settings, journey_map), build_fold(settings, journey_map)
    records = [value for _, value in events(400, 60)]
    now_ms = int(time.time() * 1000)
    stored = stored_journeys(decoder, fold, records[:200], now_ms)

    by_customer: dict[str, list[tuple[Event, Position]]] = {}
    for offset, raw in enumerate(records[:200]):
        event = Event.model_validate_json(raw)
        by_customer.setdefault(event.customer_id, []).append((event, Position(0, offset)))
    expected = {c: fold.fold(None, evs) for c, evs in by_customer.items()}
    assert stored == {c: encode_state(s) for c, s in expected.items() if s is not None}

    before = dict(stored)
    spent = timed_run(decoder, fold, records[200:], 200, stored, now_ms)
    assert stored == before
    assert set(spent) == set(PHASES)
    assert all(us > 0 for us in spent.values())
