"""Every setting in one place. Environment variables are `PARCOURS_<GROUP>_<NAME>`.

For example `PARCOURS_KAFKA_BOOTSTRAP`, `PARCOURS_REDIS_URL`, `PARCOURS_JOURNEY_MAP`.
Only entry points call `get_settings()`; everything else receives plain arguments.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Group):
    bootstrap: str | None = Field(
        default=None, description="host:port[,host:port]; unset means `parcours dev` embeds one"
    )
    events_topic: str = "parcours.events"
    dead_letter_topic: str = "parcours.events.dlq"
    partitions: int = Field(default=12, ge=1, description="for topics Parcours creates")
    replication_factor: int = Field(default=1, ge=1, description="for topics Parcours creates")
    create_topics: bool = Field(default=True, description="create missing topics at start-up")
    client_id: str = "parcours"
    consumer_group: str = "parcours-state"
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    max_poll_interval_ms: int = Field(default=300_000, ge=1000)
    max_batch: int = Field(default=2_000, ge=1, description="records folded per batch")
    fetch_max_wait_ms: int = Field(default=100, ge=0)
    request_timeout_ms: int = Field(default=10_000, ge=1000)
    produce_timeout_s: float = Field(default=5.0, gt=0, description="API waits this long for acks")
    linger_ms: int = Field(default=5, ge=0)
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    enable_idempotence: bool = Field(
        default=False, description="safe to enable on Apache Kafka; event ids dedupe anyway"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None


class RedisSettings(_Group):
    url: str | None = Field(
        default=None, description="redis://host:port/db; unset means `parcours dev` embeds one"
    )
    cluster: bool = Field(
        default=False, description="the URL names a node of a Redis Cluster (see service.keyspace)"
    )
    key_prefix: str = "parcours"
    journey_shards: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="hash tags journeys are spread over, for Redis Cluster; fixed for the data's "
        "life (changing it moves every journey's key)",
    )
    socket_timeout_s: float = Field(default=2.0, gt=0)
    max_connections: int = Field(default=64, ge=1)
    journey_ttl_days: float = Field(
        default=395, ge=0, description="a journey untouched this long expires; 0 keeps it forever"
    )


class JourneySettings(_Group):
    map: str = Field(default="retail", description="built-in map name (retail, b2b) or YAML path")
    touchpoints_kept: int = Field(default=20, ge=1, le=1000)
    stage_history_kept: int = Field(default=50, ge=1, le=1000)
    recent_products_kept: int = Field(default=20, ge=1, le=1000)
    categories_kept: int = Field(default=50, ge=1, le=1000)
    dedup_window: int = Field(
        default=256, ge=1, le=10_000, description="event ids per customer remembered for dedup"
    )
    max_event_bytes: int = Field(default=32_768, ge=1024)
    max_future_skew_s: int = Field(default=86_400, ge=0)


class ApiSettings(_Group):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    metrics_dir: Path | None = Field(
        default=None,
        description="with several workers: where they share metrics (emptied at start; "
        "default a new temporary directory)",
    )
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    gauges_refresh_s: float = Field(
        default=15.0, ge=0, description="journey gauges on /metrics are read at most this often"
    )
    auth: bool = Field(
        default=True,
        description="require API keys (`parcours keys`); `parcours dev` turns this off unless set",
    )
    key_cache_s: float = Field(
        default=5.0, ge=0, description="a key is re-read (and its revocation seen) this often"
    )
    rate_limit_per_s: float = Field(
        default=1000.0, gt=0, description="requests per second per key and API process, by default"
    )
    rate_burst_s: float = Field(
        default=2.0, gt=0, description="a key may burst this many seconds' worth of its rate"
    )
    metrics_open: bool = Field(
        default=True, description="serve /metrics without a key; false asks for an admin key"
    )


class ConsumerSettings(_Group):
    metrics_port: int = Field(default=9464, ge=0, le=65535, description="0 disables")
    retry_backoff_initial_s: float = Field(default=0.2, gt=0)
    retry_backoff_max_s: float = Field(default=10.0, gt=0)
    max_conflict_retries: int = Field(default=5, ge=1)
    chunk_records: int = Field(
        default=500,
        ge=1,
        description="a batch is folded in chunks of this many records, each written to Redis "
        "while the next is folded",
    )


class ModelSettings(_Group):
    enabled: bool = Field(
        default=True, description="record labels, attach scores and publish training samples"
    )
    samples_topic: str = "parcours.samples"
    samples_partitions: int = Field(
        default=1, ge=1, description="1 keeps one trainer learning in one order"
    )
    abandon_after_s: float = Field(
        default=3600, gt=0, description="event time after the last cart activity that abandons"
    )
    horizon_s: float = Field(
        default=86_400, gt=0, description="next stage: no transition this long after an event"
    )
    allowed_lateness_s: float = Field(
        default=60, ge=0, description="watermark slack before a deadline is taken as passed"
    )
    max_pending: int = Field(
        default=32, ge=1, le=1000, description="unresolved predictions kept per customer and kind"
    )
    next_stage_rate: float = Field(
        default=1.0, ge=0, le=1, description="share of events kept as next-stage samples"
    )
    idle_advance_after_s: float = Field(
        default=300, ge=0, description="a partition without events this long follows the clock"
    )
    sweep_batch: int = Field(default=1000, ge=1, description="customers resolved per sweep call")
    min_samples: int = Field(
        default=500, ge=0, description="samples a model learns before it replaces the fallback"
    )
    abandonment_learner: str = "logreg"
    next_stage_learner: str = "softmax"
    snapshot_every_samples: int = Field(default=2_000, ge=1)
    snapshot_every_s: float = Field(default=30, gt=0)
    reload_interval_s: float = Field(
        default=2.0, ge=0, description="how often readers check for a newer snapshot"
    )
    trainer_group: str = "parcours-trainer"
    trainer_metrics_port: int = Field(default=9465, ge=0, le=65535, description="0 disables")
    dedup_window: int = Field(
        default=50_000, ge=0, description="sample ids the trainer remembers to drop duplicates"
    )
    quality_window: int = Field(
        default=5_000,
        ge=100,
        le=1_000_000,
        description="latest samples the rolling quality metrics cover, beside the lifetime ones",
    )


class RecommendSettings(_Group):
    catalog_enabled: bool = Field(
        default=True, description="consumers learn co-occurrence and trending from events"
    )
    cooccurrence_half_life_days: float = Field(
        default=30, gt=0, description="a pair bought together this long ago counts half"
    )
    trending_half_life_hours: float = Field(
        default=24, gt=0, description="a view, cart or purchase this long ago counts half"
    )
    neighbours_kept: int = Field(
        default=50, ge=1, le=1000, description="co-occurrence neighbours kept per product (top K)"
    )
    trending_kept: int = Field(
        default=500, ge=1, description="products kept per trending list (overall, per category)"
    )
    max_basket: int = Field(default=50, ge=2, description="products of one basket that count")
    min_support: float = Field(
        default=2.0, ge=0, description="decayed baskets a pair needs before it is suggested"
    )
    max_seeds: int = Field(
        default=5, ge=1, le=50, description="viewed, carted and bought products used as seeds"
    )
    neighbours_per_seed: int = Field(
        default=20, ge=1, le=1000, description="candidates read per seed product"
    )
    bought_window_days: float = Field(
        default=30, ge=0, description="a product bought this recently is not suggested again"
    )
    risk_threshold: float = Field(
        default=0.5, ge=0, le=1, description="abandonment risk that triggers a cart reminder"
    )
    idle_cart_minutes: float = Field(
        default=30, gt=0, description="a cart untouched this long gets a reminder at any risk"
    )
    default_limit: int = Field(default=10, ge=1, le=100)
    max_limit: int = Field(default=50, ge=1, le=100)
    max_batch: int = Field(
        default=100, ge=1, le=1000, description="customers per batch recommendation request"
    )
    cache_ttl_s: float = Field(
        default=30.0, ge=0, description="API caches catalog neighbours and trending this long"
    )
    cache_stale_s: float = Field(
        default=300.0,
        ge=0,
        description="after its TTL a cached entry is still served this long while it is "
        "refetched in the background (0: refetched before answering)",
    )
    cache_entries: int = Field(
        default=50_000, ge=1, description="products and trending lists the API cache holds"
    )


class AnalyticsSettings(_Group):
    enabled: bool = Field(
        default=True, description="state consumers keep funnel, flow and friction analytics"
    )
    horizon_s: float = Field(
        default=86_400, gt=0, description="a customer not seen this long (event time) has exited"
    )
    allowed_lateness_s: float = Field(
        default=60, ge=0, description="watermark slack before an exit or abandonment is decided"
    )
    hour_retention_days: float = Field(
        default=35, gt=0, le=366, description="hourly buckets kept (event time)"
    )
    day_retention_days: float = Field(
        default=400, gt=0, le=3660, description="daily buckets kept (event time)"
    )
    touchpoints: int = Field(
        default=3, ge=1, le=20, description="last touchpoints counted before leaving or moving on"
    )
    max_touchpoints: int = Field(
        default=500, ge=10, description="touchpoint targets kept per bucket and segment"
    )
    sweep_batch: int = Field(
        default=1000, ge=1, description="exits and carts resolved per partition per batch"
    )


class TriggerSettings(_Group):
    enabled: bool = Field(
        default=True, description="state consumers publish webhook triggers to the topic"
    )
    topic: str = "parcours.triggers"
    at_risk_threshold: float = Field(
        default=0.7, ge=0, le=1, description="risk that emits cart.at_risk, once per cart"
    )


class WebhookSettings(_Group):
    allow_http: bool = Field(
        default=False, description="accept http:// targets (development only; https otherwise)"
    )
    allow_private_targets: bool = Field(
        default=False,
        description="accept loopback, private and other non-public targets (development only)",
    )
    resolve_timeout_s: float = Field(
        default=2.0, gt=0, description="how long resolving a target's host name may take"
    )
    dead_letter_topic: str = "parcours.triggers.dlq"
    dispatcher_group: str = "parcours-dispatcher"
    timeout_s: float = Field(default=10.0, gt=0, description="whole HTTP attempt, connect to body")
    max_attempts: int = Field(default=8, ge=1, description="attempts before dead-lettering")
    backoff_base_s: float = Field(default=1.0, gt=0, description="ceiling of the first retry delay")
    backoff_max_s: float = Field(default=600.0, gt=0, description="largest retry delay")
    retry_after_max_s: float = Field(default=3600.0, ge=0, description="Retry-After honoured up to")
    concurrency: int = Field(
        default=32, ge=1, le=256, description="attempts in flight per endpoint"
    )
    max_backlog: int = Field(
        default=200, ge=0, description="deliveries queued per endpoint before the rest are parked"
    )
    max_pending: int = Field(
        default=10_000, ge=1, description="unsettled deliveries before the dispatcher stops reading"
    )
    breaker_failures: int = Field(default=5, ge=1, description="consecutive failures that open it")
    breaker_cooldown_s: float = Field(default=30.0, gt=0, description="first open period")
    breaker_max_cooldown_s: float = Field(default=600.0, gt=0, description="longest open period")
    park_poll_s: float = Field(default=1.0, gt=0, description="how often parked deliveries are due")
    park_lease_s: float = Field(
        default=60.0, gt=0, description="a claimed parked delivery is re-offered after this"
    )
    delivery_log_length: int = Field(default=200, ge=1, description="attempts kept per endpoint")
    dead_kept_days: float = Field(
        default=14.0, gt=0, description="dead-lettered deliveries kept for redelivery"
    )
    max_connections: int = Field(default=100, ge=1, description="HTTP connections per process")
    subscriptions_refresh_s: float = Field(default=2.0, gt=0)
    metrics_port: int = Field(default=9466, ge=0, le=65535, description="0 disables")


class PrivacySettings(_Group):
    erasure_hold_days: float = Field(
        default=30,
        gt=0,
        description="after an erasure, the customer's events are dropped this long (late and "
        "replayed ones must not rebuild a profile)",
    )


class ExperimentSettings(_Group):
    refresh_s: float = Field(
        default=5.0, gt=0, description="how often processes reload experiment definitions"
    )
    holdout: float = Field(
        default=0.0,
        ge=0,
        le=0.5,
        description="share of customers (by hash) who get no personalization, compared with "
        "the rest as the experiment `holdout`; 0 turns it off",
    )
    holdout_window_s: int = Field(
        default=7 * 86_400, ge=60, description="how long after their first event a purchase counts"
    )
    holdout_success: str = Field(
        default="purchase", pattern=r"^[a-z][a-z0-9_]{0,63}$", description="what counts"
    )


class LogSettings(_Group):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class Settings(BaseSettings):
    """All of Parcours's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="PARCOURS_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        frozen=True,
        extra="ignore",
    )

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    journey: JourneySettings = JourneySettings()
    api: ApiSettings = ApiSettings()
    consumer: ConsumerSettings = ConsumerSettings()
    models: ModelSettings = ModelSettings()
    recommend: RecommendSettings = RecommendSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()
    triggers: TriggerSettings = TriggerSettings()
    webhooks: WebhookSettings = WebhookSettings()
    privacy: PrivacySettings = PrivacySettings()
    experiments: ExperimentSettings = ExperimentSettings()
    log: LogSettings = LogSettings()

    @model_validator(mode="after")
    def _cluster_needs_catalog_cache(self) -> Settings:
        """Uncached recommendations read the journey inside the catalog's script, which a
        cluster refuses (the two live in different slots)."""
        if self.redis.cluster and self.recommend.cache_ttl_s == 0:
            raise ValueError(
                "PARCOURS_RECOMMEND_CACHE_TTL_S=0 needs standalone Redis; with "
                "PARCOURS_REDIS_CLUSTER=true set it above 0"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
