"""The environment of Parcours roles started by a benchmark: isolated from every other run."""

from __future__ import annotations

import os


def isolated_env(
    bootstrap: str, redis_url: str, name: str, *, events_topic: str | None = None
) -> dict[str, str]:
    """Topics, consumer group and Redis key prefix named after `name` (events on
    `events_topic` when given), no fixed metrics port and quiet logs; a benchmark adds its own
    settings on top."""
    topic = events_topic or f"{name}-events"
    return {
        **os.environ,
        "PARCOURS_KAFKA_BOOTSTRAP": bootstrap,
        "PARCOURS_KAFKA_EVENTS_TOPIC": topic,
        "PARCOURS_KAFKA_DEAD_LETTER_TOPIC": f"{topic}.dlq",
        "PARCOURS_KAFKA_CONSUMER_GROUP": name,
        "PARCOURS_REDIS_URL": redis_url,
        "PARCOURS_REDIS_KEY_PREFIX": name,
        "PARCOURS_MODELS_SAMPLES_TOPIC": f"{name}-samples",
        "PARCOURS_CONSUMER_METRICS_PORT": "0",
        "PARCOURS_LOG_LEVEL": "WARNING",
    }
