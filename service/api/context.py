"""What the API's lifespan builds once and every request shares."""

from __future__ import annotations

from dataclasses import dataclass

from models.events import EventDecoder
from models.journeymap import JourneyMap
from service.access import Gate, KeyStore
from service.analytics import AnalyticsStore
from service.api.journey_gauges import JourneyGaugeExporter
from service.api.recommender import Recommender
from service.bus import EventPublisher, ManagedProducer
from service.deliveries import DeliveryStore
from service.exposures import Exposures
from service.metrics import ApiMetrics
from service.scoring import LiveScorer
from service.settings import Settings
from service.snapshots import SnapshotStore
from service.store import JourneyStore, RedisClient
from service.subscriptions import SubscriptionStore
from service.webhook_sender import WebhookSender


@dataclass(frozen=True, slots=True)
class ApiContext:
    settings: Settings
    journey_map: JourneyMap
    decoder: EventDecoder
    redis: RedisClient
    store: JourneyStore
    producer: ManagedProducer
    publisher: EventPublisher
    metrics: ApiMetrics
    scorer: LiveScorer
    snapshots: SnapshotStore
    recommender: Recommender
    subscriptions: SubscriptionStore
    deliveries: DeliveryStore
    webhook_sender: WebhookSender
    journey_gauges: JourneyGaugeExporter
    analytics: AnalyticsStore
    journey_maps: dict[str, JourneyMap]
    """Maps whose analytics can be read: the built-in ones and the active one."""
    keys: KeyStore
    gate: Gate | None
    """Checks API keys; None when `api.auth` is off."""
    exposures: Exposures
    """Experiment decisions and the exposures they are recorded as."""
