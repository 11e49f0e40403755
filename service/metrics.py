"""Every Prometheus metric Parcours exposes, grouped by the process role that records it.

Names follow `parcours_<area>_<thing>_<unit>`; labels are low-cardinality (never a customer).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

_Metric = TypeVar("_Metric", bound=MetricWrapperBase)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_EVENT_TIME_BUCKETS = (*_LAG_BUCKETS, 4 * 3600, 86_400, 7 * 86_400)  # late and replayed events
_BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
_CALL_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                 0.5, 1, 2.5)  # fmt: skip


def cached_labels(metric: _Metric) -> Callable[..., _Metric]:
    """`metric.labels` that remembers each child: a hot path pays one dict lookup instead of
    the client's checks, lock and key building. Only for metrics whose children are never
    removed (a remembered child would outlive `remove`) and whose label values are bounded."""
    return functools.lru_cache(maxsize=4096)(metric.labels)


class DependencyMetrics:
    """Every process: its calls to Redis and its produce requests to Kafka, timed, and their
    errors (`service.instrumented`)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.redis_seconds = Histogram(
            "parcours_redis_command_duration_seconds",
            "Time from sending a Redis command (or a pipeline: PIPELINE, MULTI) to its reply.",
            ["command"], buckets=_CALL_BUCKETS, registry=registry,
        )  # fmt: skip
        self.redis_errors = Counter(
            "parcours_redis_command_errors_total",
            "Redis commands that failed: connection, timeout or error reply, by exception.",
            ["command", "error"], registry=registry,
        )  # fmt: skip
        self.redis_call = cached_labels(self.redis_seconds)
        self.produce_seconds = Histogram(
            "parcours_kafka_produce_duration_seconds",
            "Time from handing a record to the producer to the broker's acknowledgement.",
            ["topic"], buckets=_CALL_BUCKETS, registry=registry,
        )  # fmt: skip
        self.produce_errors = Counter(
            "parcours_kafka_produce_errors_total",
            "Records the broker did not acknowledge, by topic and exception.",
            ["topic", "error"], registry=registry,
        )  # fmt: skip


class RunnerMetrics:
    """Any batch worker (`consumers.runner`): batches, retries, commits, partitions, lag."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.batch_size = Histogram(
            "parcours_consumer_batch_size_records", "Records per processed batch.",
            buckets=_BATCH_BUCKETS, registry=registry,
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "parcours_consumer_batch_duration_seconds", "Time to process and commit a batch.",
            buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.retries = Counter(
            "parcours_consumer_retries_total", "Batches rewound and retried after an error.",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.commit_failures = Counter(
            "parcours_consumer_commit_failures_total",
            "Offset commits refused (usually a rebalance); the batch is safely redelivered.",
            registry=registry,
        )  # fmt: skip
        self.rebalances = Counter(
            "parcours_consumer_rebalances_total", "Partition assignments received.",
            registry=registry,
        )  # fmt: skip
        self.assigned = Gauge(
            "parcours_consumer_assigned_partitions", "Partitions this process owns.",
            registry=registry,
        )  # fmt: skip
        self.lag = Gauge(
            "parcours_consumer_lag_records", "Records between the committed position and the end.",
            ["partition"], registry=registry,
        )  # fmt: skip


class ConsumerMetrics(RunnerMetrics):
    """The state consumer: what it read, applied, skipped and dead-lettered, and how fast."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        super().__init__(registry)
        self.consumed = Counter(
            "parcours_events_consumed_total", "Records read from the events topic.",
            registry=registry,
        )  # fmt: skip
        self.applied = Counter(
            "parcours_events_applied_total", "Events folded into journey state.",
            ["type"], registry=registry,
        )  # fmt: skip
        self.deduplicated = Counter(
            "parcours_events_deduplicated_total",
            "Events skipped as already applied (redelivered offset or repeated event_id).",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.suppressed = Counter(
            "parcours_events_suppressed_total",
            "Valid events not applied on purpose (erased: the customer's erasure is held).",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.dead_lettered = Counter(
            "parcours_events_dead_lettered_total", "Records sent to the dead-letter topic.",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.state_lag = Histogram(
            "parcours_event_state_lag_seconds",
            "From the Kafka record timestamp to the journey state written in Redis.",
            buckets=_LAG_BUCKETS, registry=registry,
        )  # fmt: skip
        self.event_time_lag = Histogram(
            "parcours_event_time_to_state_seconds",
            "From the event's own timestamp (event time) to its journey state written in Redis.",
            buckets=_EVENT_TIME_BUCKETS, registry=registry,
        )  # fmt: skip
        self.score_lag = Histogram(
            "parcours_event_score_lag_seconds",
            "From the Kafka record timestamp to the customer's refreshed scores being readable.",
            buckets=_LAG_BUCKETS, registry=registry,
        )  # fmt: skip
        self.write_conflicts = Counter(
            "parcours_store_write_conflicts_total",
            "Journey writes refused because another writer changed the journey first.",
            registry=registry,
        )  # fmt: skip
        self.labels_resolved = Counter(
            "parcours_labels_resolved_total",
            "Training labels resolved and published as samples, by model and outcome.",
            ["model", "outcome"], registry=registry,
        )  # fmt: skip
        self.labels_dropped = Counter(
            "parcours_labels_dropped_total",
            "Predictions discarded unresolved (label book full, or the journey expired).",
            registry=registry,
        )  # fmt: skip
        self.watermark = Gauge(
            "parcours_partition_watermark_seconds",
            "Newest event time applied per partition (Unix seconds): the labels' clock.",
            ["partition"], registry=registry,
        )  # fmt: skip
        self.recommendation_feedback = Counter(
            "parcours_recommendation_feedback_total",
            "Served recommendations reported back, by action type and kind (view, click); "
            "divide by parcours_recommendations_served_total for the click-through rate.",
            ["type", "kind"], registry=registry,
        )  # fmt: skip
        self.triggers = Counter(
            "parcours_triggers_emitted_total",
            "Webhook triggers published to the triggers topic, by type.",
            ["type"], registry=registry,
        )  # fmt: skip
        self.triggers_capped = Counter(
            "parcours_triggers_capped_total",
            "Triggers not emitted because the journey map's frequency cap held them, by type.",
            ["type"], registry=registry,
        )  # fmt: skip
        self.triggers_held_out = Counter(
            "parcours_triggers_held_out_total",
            "Triggers not emitted because the customer is in the personalization holdout.",
            ["type"], registry=registry,
        )  # fmt: skip
        self.experiment_decisions = Counter(
            "parcours_experiment_decisions_total",
            "Variants given at decision points (webhook triggers here), by experiment.",
            ["experiment", "variant"], registry=registry,
        )  # fmt: skip
        self.experiment_outcomes = Counter(
            "parcours_experiment_outcomes_total",
            "Exposures counted and their outcomes resolved (exposed, converted, missed).",
            ["experiment", "variant", "outcome"], registry=registry,
        )  # fmt: skip
        self.stage_transitions = Counter(
            "parcours_journey_stage_transitions_total",
            "Customers moving between journey stages, by stage left ('new' for a customer's "
            "first event) and stage entered: the journey map's flows.",
            ["from_stage", "to_stage"], registry=registry,
        )  # fmt: skip
        self.catalog_updates = Counter(
            "parcours_catalog_updates_total",
            "Co-occurrence and trending updates learned from applied events.",
            registry=registry,
        )  # fmt: skip
        self.analytics_facts = Counter(
            "parcours_analytics_facts_total",
            "Applied events counted into the journey analytics (each once, however redelivered).",
            registry=registry,
        )  # fmt: skip
        self.analytics_resolved = Counter(
            "parcours_analytics_resolved_total",
            "Exits and abandoned carts decided on event time and counted, by outcome.",
            ["outcome"], registry=registry,
        )  # fmt: skip


class ApiMetrics:
    """The HTTP API: requests and the events it accepted or refused."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.requests = Counter(
            "parcours_http_requests_total", "HTTP requests answered.",
            ["route", "method", "status"], registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "parcours_http_request_duration_seconds", "Time to answer an HTTP request.",
            ["route", "method"], buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.requests_of = cached_labels(self.requests)
        self.latency_of = cached_labels(self.latency)
        self.events = Counter(
            "parcours_api_events_total",
            "Events received over HTTP by outcome (accepted, invalid, unavailable).",
            ["outcome"], registry=registry,
        )  # fmt: skip
        self.refused = Counter(
            "parcours_api_refused_total",
            "Requests refused before their route ran: 401 no valid key, 403 wrong scope, "
            "429 over the key's rate.",
            ["status"], registry=registry,
        )  # fmt: skip
        self.recommendations = Counter(
            "parcours_recommendations_served_total",
            "Recommendation actions served, by action type and page context.",
            ["type", "context"], registry=registry,
        )  # fmt: skip
        self.recommendations_of = cached_labels(self.recommendations)
        self.exposures = Counter(
            "parcours_api_experiment_exposures_total",
            "First exposures the API published as experiment_exposure events (recorded), or "
            "could not (failed: the decision was not shown).",
            ["experiment", "outcome"], registry=registry,
        )  # fmt: skip
        self.dependency_up = Gauge(
            "parcours_api_dependency_up",
            "1 if the last readiness probe (GET /readyz) reached the dependency, else 0.",
            ["dependency"], registry=registry, multiprocess_mode="livemin",
        )  # fmt: skip
        # Journey gauges: global counts read from Redis at scrape time; with several workers
        # the newest reading wins.
        self.journey_customers = Gauge(
            "parcours_journey_customers",
            "Customers with a live journey (not expired), by the stage they are in.",
            ["stage"], registry=registry, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.open_carts = Gauge(
            "parcours_journey_open_carts", "Live journeys whose cart holds items.",
            registry=registry, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.open_cart_value = Gauge(
            "parcours_journey_open_cart_value",
            "Value of the items in open carts, in the shop's currency.",
            registry=registry, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.cart_value_at_risk = Gauge(
            "parcours_journey_cart_value_at_risk",
            "Open carts' value times each cart's last abandonment risk, in the shop's currency.",
            registry=registry, multiprocess_mode="mostrecent",
        )  # fmt: skip


class ModelMetrics:
    """Any process serving models: which snapshot it serves and the ones it refused."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.loaded = Counter(
            "parcours_model_snapshots_loaded_total", "Model snapshots loaded (hot reloads).",
            registry=registry,
        )  # fmt: skip
        self.refused = Counter(
            "parcours_model_snapshots_refused_total",
            "Model snapshots that failed to load; the previous one stayed in service.",
            registry=registry,
        )  # fmt: skip
        self.version = Gauge(
            "parcours_model_snapshot_version", "Version of the snapshot being served.",
            registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        self.published_at = Gauge(
            "parcours_model_snapshot_published_timestamp_seconds",
            "When the served snapshot was published (Unix time; age = time() - this).",
            registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        self.served_metric = Gauge(
            "parcours_model_served_metric",
            "Progressive-validation metric of the snapshot being served, by model and metric.",
            ["model", "metric"], registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        self.predictions = Counter(
            "parcours_predictions_served_total", "Predictions served, by model and version kind.",
            ["model", "source"], registry=registry,
        )  # fmt: skip


class TrainerMetrics:
    """The trainer: samples learned, snapshots published and the progressive metrics, over each
    model's life and over its last `quality_window` samples (which the HELP text states)."""

    def __init__(
        self, registry: CollectorRegistry = REGISTRY, *, quality_window: int = 5000
    ) -> None:
        self.registry = registry
        self.learned = Counter(
            "parcours_trainer_samples_learned_total", "Samples scored and then learned.",
            ["model"], registry=registry,
        )  # fmt: skip
        self.skipped = Counter(
            "parcours_trainer_samples_skipped_total",
            "Samples not learned: duplicate (already learned) or invalid (dead-lettered).",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.published = Counter(
            "parcours_trainer_snapshots_published_total", "Model snapshots published.",
            registry=registry,
        )  # fmt: skip
        self.snapshot_bytes = Gauge(
            "parcours_trainer_snapshot_size_bytes", "Size of the last published snapshot.",
            registry=registry,
        )  # fmt: skip
        self.progressive = Gauge(
            "parcours_model_progressive_metric",
            "Progressive-validation metric (scored before learning), by model and metric.",
            ["model", "metric"], registry=registry,
        )  # fmt: skip
        self.samples = Gauge(
            "parcours_model_samples_seen", "Samples each model has learned in its lifetime.",
            ["model"], registry=registry,
        )  # fmt: skip
        self.rolling = Gauge(
            "parcours_model_rolling_metric",
            f"Progressive-validation metric over each model's last {quality_window} samples "
            "(PARCOURS_MODELS_QUALITY_WINDOW), by model and metric: its quality now.",
            ["model", "metric"], registry=registry,
        )  # fmt: skip
        self.rolling_samples = Gauge(
            "parcours_model_rolling_window_samples",
            f"Samples parcours_model_rolling_metric covers: the last {quality_window}, "
            "fewer until a model has seen that many.",
            ["model"], registry=registry,
        )  # fmt: skip
        self.experiment_arms = Gauge(
            "parcours_experiment_variant",
            "Each experiment variant's tally as the trainer learned it: exposures, resolved "
            "(outcome known), conversions.",
            ["experiment", "variant", "count"], registry=registry,
        )  # fmt: skip
        self.experiment_best = Gauge(
            "parcours_experiment_probability_best",
            "Posterior probability that the variant has the highest conversion rate.",
            ["experiment", "variant"], registry=registry,
        )  # fmt: skip
        self.label_to_snapshot = Histogram(
            "parcours_trainer_label_to_snapshot_seconds",
            "From a sample's publication to the snapshot that includes it being published.",
            buckets=_LAG_BUCKETS, registry=registry,
        )  # fmt: skip


class DispatcherMetrics(RunnerMetrics):
    """The webhook dispatcher: attempts, outcomes, latency and lag, breakers, parked backlog."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        super().__init__(registry)
        self.triggers = Counter(
            "parcours_webhook_triggers_consumed_total",
            "Trigger records read, by result (fanned_out, unmatched, invalid).",
            ["result"], registry=registry,
        )  # fmt: skip
        self.attempts = Counter(
            "parcours_webhook_attempts_total",
            "HTTP attempts, by result class (2xx, 4xx, 429, 5xx, error, refused).",
            ["result"], registry=registry,
        )  # fmt: skip
        self.attempt_seconds = Histogram(
            "parcours_webhook_attempt_duration_seconds", "Duration of one HTTP attempt.",
            buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.deliveries = Counter(
            "parcours_webhook_deliveries_total",
            "Deliveries finished, by outcome (delivered, dead_lettered, dropped).",
            ["outcome"], registry=registry,
        )  # fmt: skip
        self.dead_lettered = Counter(
            "parcours_webhook_dead_lettered_total",
            "Deliveries dead-lettered, by reason (exhausted, rejected, refused).",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.parked = Counter(
            "parcours_webhook_parked_total",
            "Deliveries parked in Redis, by reason (retry, breaker_open, backlog).",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.parked_backlog = Gauge(
            "parcours_webhook_parked_deliveries", "Deliveries parked in Redis, waiting.",
            registry=registry,
        )  # fmt: skip
        self.breaker = Gauge(
            "parcours_webhook_breaker_state",
            "Circuit breaker per subscription: 0 closed, 1 half-open, 2 open.",
            ["subscription"], registry=registry,
        )  # fmt: skip
        self.delivery_lag = Histogram(
            "parcours_webhook_delivery_lag_seconds",
            "From the trigger record's Kafka timestamp to the receiver's 2xx.",
            buckets=_LAG_BUCKETS, registry=registry,
        )  # fmt: skip
        self.pending = Gauge(
            "parcours_webhook_pending_deliveries",
            "Deliveries in memory (queued or in flight) holding back their partition's commit.",
            registry=registry,
        )  # fmt: skip
