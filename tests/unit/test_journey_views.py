"""What a consumer keeps of the journeys it wrote: only states still encoded as read, handed
out once, the least recently written dropped first."""

from __future__ import annotations

import pytest

from consumers.journey_views import KnownJourneys, View
from models.state import JourneyState, encode_state
from service.store import Stored


def _state(customer: str, stage: str = "awareness") -> JourneyState:
    return JourneyState(customer, "retail", stage, 1, 1, 1, events_applied=1)


def _written(customer: str, stage: str = "awareness") -> tuple[str, View]:
    state = _state(customer, stage)
    return customer, View(Stored(encode_state(state), 1), state)


def _read(customer: str, stage: str = "awareness") -> Stored:
    return Stored(encode_state(_state(customer, stage)), 1)


def _kept(known: KnownJourneys, customers: str) -> str:
    return "".join(c for c in customers if known.view(c, _read(c)).decoded is not None)


def test_a_journey_read_as_it_was_written_gets_the_kept_state_once() -> None:
    known = KnownJourneys(10)
    customer, written = _written("a")
    known.remember([(customer, written)])

    view = known.view("a", _read("a"))

    assert view.decoded is not None
    assert view.take() is not None
    assert known.view("a", _read("a")).decoded is None, "handed out once"
    assert written.decoded is None, "the view it was kept in no longer holds it"


def test_a_journey_read_changed_gets_no_kept_state() -> None:
    known = KnownJourneys(10)
    known.remember([_written("a")])

    view = known.view("a", _read("a", stage="decision"))

    assert view.decoded is None
    taken = view.take()
    assert taken is not None
    assert taken.stage == "decision"


def test_known_journeys_drop_the_least_recently_written_first() -> None:
    known = KnownJourneys(2)
    known.remember([_written("a"), _written("b")])
    known.remember([_written("a")])  # written again: b is now the oldest
    known.remember([_written("c")])

    assert len(known) == 2
    assert _kept(known, "abc") == "ac"


def test_known_journeys_keep_no_view_whose_state_was_taken() -> None:
    known = KnownJourneys(10)
    customer, view = _written("a")
    view.take()
    known.remember([(customer, view), _written("b")])

    assert _kept(known, "ab") == "b"


def test_known_journeys_of_capacity_zero_keep_nothing_and_negative_is_refused() -> None:
    known = KnownJourneys(0)
    known.remember([_written("a")])
    assert len(known) == 0
    with pytest.raises(ValueError, match="capacity"):
        KnownJourneys(-1)


def test_view_hands_out_its_decoded_state_once_then_decodes_anew() -> None:
    _, view = _written("a")
    state = view.decoded

    first = view.take()
    assert first is state
    assert first is not None
    first.stage = "decision"  # the taker changes its own state in place
    again = view.take()

    assert again is not state
    assert again is not None
    assert again.stage == "awareness"


def test_view_of_no_journey_takes_none() -> None:
    assert View(Stored(None, 0)).take() is None
