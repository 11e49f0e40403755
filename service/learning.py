"""Build the learning pieces (labeler, models, snapshot registry, scorer) from settings."""

from __future__ import annotations

from models.features import feature_vector
from models.journeymap import JourneyMap
from models.labels import Labeler
from models.training import TrainingState, new_training_state
from service.metrics import ModelMetrics
from service.scoring import LiveScorer
from service.settings import ModelSettings, RedisSettings
from service.snapshots import ModelRegistry, SnapshotStore
from service.store import RedisClient


def build_labeler(models: ModelSettings) -> Labeler:
    return Labeler(
        feature_vector,
        abandon_after_ms=int(models.abandon_after_s * 1000),
        horizon_ms=int(models.horizon_s * 1000),
        max_pending=models.max_pending,
        next_stage_rate=models.next_stage_rate,
    )


def fresh_training(models: ModelSettings, journey_map: JourneyMap) -> TrainingState:
    """Untrained models for `journey_map`, as configured."""
    return new_training_state(
        list(journey_map.stages),
        abandonment_learner=models.abandonment_learner,
        next_stage_learner=models.next_stage_learner,
        min_samples=models.min_samples,
        dedup_window=models.dedup_window,
        quality_window=models.quality_window,
    )


def snapshot_store(redis: RedisClient, settings: RedisSettings) -> SnapshotStore:
    return SnapshotStore(redis, prefix=settings.key_prefix)


def live_scorer(
    redis: RedisClient,
    settings: RedisSettings,
    models: ModelSettings,
    journey_map: JourneyMap,
    metrics: ModelMetrics,
) -> LiveScorer:
    """Scores with the newest snapshot in Redis, checked every `reload_interval_s`."""
    registry = ModelRegistry(
        snapshot_store(redis, settings),
        metrics,
        interval_s=models.reload_interval_s,
        accepts=lambda loaded: isinstance(loaded, TrainingState),
    )
    return LiveScorer(registry, fresh_training(models, journey_map), metrics)
