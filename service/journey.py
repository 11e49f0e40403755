"""Build the journey domain objects (map, fold, decoder) from settings, once per process."""

from __future__ import annotations

from models.events import EventDecoder
from models.fold import Fold, Limits
from models.journeymap import JourneyMap, load_journey_map
from service.settings import JourneySettings


def build_fold(journey: JourneySettings, journey_map: JourneyMap | None = None) -> Fold:
    journey_map = journey_map or load_journey_map(journey.map)
    limits = Limits(
        touchpoints=journey.touchpoints_kept,
        stage_history=journey.stage_history_kept,
        recent_products=journey.recent_products_kept,
        categories=journey.categories_kept,
        seen_event_ids=journey.dedup_window,
    )
    return Fold(journey_map, limits)


def build_decoder(journey: JourneySettings, journey_map: JourneyMap) -> EventDecoder:
    return EventDecoder(
        journey_map.event_types,
        max_event_bytes=journey.max_event_bytes,
        max_future_skew_ms=journey.max_future_skew_s * 1000,
    )
