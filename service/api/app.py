"""The FastAPI application: `create_app()` wires settings into a ready-to-serve app."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from models.errors import InvalidEvent
from models.events import Event
from models.journeymap import BUILTIN_MAPS, load_journey_map
from service.access import Denied, Gate, KeyStore, RateLimited
from service.analytics import analytics_store
from service.api.auth import document_keys, refused
from service.api.context import ApiContext
from service.api.exposition import api_registry, worker_stopped
from service.api.http_errors import RouteMethods, http_error
from service.api.journey_gauges import JourneyGaugeExporter
from service.api.middleware import MetricsMiddleware
from service.api.recommender import TRENDING_SLACK, Recommender
from service.api.responses import problem
from service.api.routes import (
    analytics,
    deliveries,
    events,
    experiments,
    journeys,
    keys,
    meta,
    page,
    predictions,
    privacy,
    recommendations,
    webhooks,
)
from service.bus import EventPublisher, ManagedProducer, ensure_parcours_topics, make_producer
from service.catalog import catalog_store
from service.catalog_cache import CatalogCache
from service.deliveries import DeliveryStore
from service.errors import BusUnavailable, StoreUnavailable
from service.experiments import ExperimentBook, ExperimentStore
from service.exposures import Exposures
from service.journey import build_decoder, build_fold
from service.learning import live_scorer, snapshot_store
from service.metrics import ApiMetrics, DependencyMetrics, ModelMetrics
from service.settings import ApiSettings, Settings, get_settings
from service.store import journey_store, learn_topology, redis_from_settings
from service.subscriptions import SubscriptionStore
from service.webhook_sender import WebhookSender, make_http_client

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 2

_YOUNG_GC_THRESHOLD = 10_000
"""Allocations between young-generation collections in an API process (CPython: 700)."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; a bad journey map or setting fails here, before serving."""
    settings = settings or get_settings()
    fold = build_fold(settings.journey)
    decoder = build_decoder(settings.journey, fold.map)
    registry = api_registry()
    metrics = ApiMetrics(registry)
    model_metrics = ModelMetrics(registry)
    dependency_metrics = DependencyMetrics(registry)
    journey_maps = {name: load_journey_map(name) for name in BUILTIN_MAPS}
    journey_maps[fold.map.name] = fold.map

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        kafka, redis_settings = settings.kafka, settings.redis
        redis = redis_from_settings(redis_settings, metrics=dependency_metrics)
        try:
            await learn_topology(redis)
        except StoreUnavailable as exc:  # readiness says so; the client retries on use
            logger.warning("Redis not reachable at start-up: %s", exc)

        async def prepare() -> None:
            if kafka.create_topics:
                await ensure_parcours_topics(settings)

        producer = ManagedProducer(
            lambda: make_producer(kafka, dependency_metrics), prepare=prepare
        )
        await producer.start(wait_s=5.0)
        scorer = live_scorer(redis, redis_settings, settings.models, fold.map, model_metrics)
        await scorer.registry.refresh(force=True)
        store = journey_store(redis, redis_settings)
        recommend = settings.recommend
        catalog = catalog_store(redis, redis_settings.key_prefix, recommend)
        cache = None
        if recommend.cache_ttl_s > 0:
            cache = CatalogCache(
                catalog,
                ttl_s=recommend.cache_ttl_s,
                stale_s=recommend.cache_stale_s,
                max_entries=recommend.cache_entries,
                per_seed=recommend.neighbours_per_seed,
                min_support=recommend.min_support,
                trending=2 * recommend.max_limit + TRENDING_SLACK,
            )
        publisher = EventPublisher(producer, kafka.events_topic, timeout_s=kafka.produce_timeout_s)
        experiment_book = ExperimentBook(
            ExperimentStore(redis, prefix=redis_settings.key_prefix),
            refresh_s=settings.experiments.refresh_s,
            initial_stage=fold.map.initial_stage,
        )
        exposures = Exposures(
            experiment_book, publisher, scorer, metrics, holdout=settings.experiments.holdout
        )
        recommender = Recommender(
            recommend, fold.map, store, catalog, scorer, metrics, cache, exposures
        )
        key_store = KeyStore(redis, prefix=redis_settings.key_prefix)
        webhook_settings = settings.webhooks
        http_client = make_http_client(webhook_settings)
        app.state.context = ApiContext(
            settings=settings,
            journey_map=fold.map,
            decoder=decoder,
            redis=redis,
            store=store,
            producer=producer,
            publisher=publisher,
            metrics=metrics,
            scorer=scorer,
            snapshots=snapshot_store(redis, redis_settings),
            recommender=recommender,
            subscriptions=SubscriptionStore(redis, prefix=redis_settings.key_prefix),
            deliveries=DeliveryStore(
                redis,
                prefix=redis_settings.key_prefix,
                log_length=webhook_settings.delivery_log_length,
                dead_kept_s=webhook_settings.dead_kept_days * 86_400,
            ),
            webhook_sender=WebhookSender(http_client, webhook_settings),
            journey_gauges=JourneyGaugeExporter(
                store,
                fold.map.stages,
                metrics,
                min_interval_s=settings.api.gauges_refresh_s,
                timeout_s=redis_settings.socket_timeout_s,
            ),
            analytics=analytics_store(redis, settings),
            journey_maps=journey_maps,
            keys=key_store,
            gate=_gate(key_store, settings.api),
            exposures=exposures,
        )
        # Everything built so far (models, maps, clients) lives as long as the process: keep
        # it out of the cyclic collector's generations, which otherwise rescan it under load.
        gc.collect()
        gc.freeze()
        # A request allocates many short-lived containers (a decoded journey alone is
        # hundreds), nearly all freed by reference counting: at the default threshold (700)
        # the young generation was collected every request or two, scanning those in flight.
        thresholds = gc.get_threshold()
        gc.set_threshold(_YOUNG_GC_THRESHOLD, *thresholds[1:])
        try:
            yield
        finally:
            worker_stopped()
            gc.set_threshold(*thresholds)
            gc.unfreeze()
            if cache is not None:
                await cache.aclose()
            await http_client.close()
            await producer.stop()
            await redis.aclose()

    documented = (
        events, journeys, predictions, recommendations, experiments, webhooks, deliveries,
        analytics, keys, privacy, meta, page,
    )  # fmt: skip
    app = FastAPI(
        title="Parcours",
        summary="Real-time customer-journey personalization.",
        version="0.1.0",
        lifespan=lifespan,
        openapi_tags=[{"name": tag} for tag in _tags(module.router for module in documented)],
    )
    # Routes are matched in order: the storefronts' page-view call first, as it is the most
    # frequent; the documentation keeps its own order (the tags above).
    matched = (recommendations, *(module for module in documented if module is not recommendations))
    for router in (module.router for module in matched):
        app.include_router(router)
    app.mount("/static", page.static_files, name="static")
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(InvalidEvent, _invalid_event)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Denied, refused)
    app.add_exception_handler(RateLimited, refused)
    app.add_exception_handler(StoreUnavailable, _unavailable)
    app.add_exception_handler(BusUnavailable, _unavailable)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _document_event_schema(app)
    app.state.route_methods = RouteMethods.of(app)
    return app


def _gate(keys: KeyStore, api: ApiSettings) -> Gate | None:
    if not api.auth:
        logger.warning("API keys are not required (PARCOURS_API_AUTH=false): development only")
        return None
    return Gate(
        keys,
        cache_s=api.key_cache_s,
        default_rate_per_s=api.rate_limit_per_s,
        burst_s=api.rate_burst_s,
    )


async def _invalid_event(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidEvent)
    context: ApiContext = request.app.state.context
    context.metrics.events.labels("invalid").inc()
    return problem(422, exc.errors, reason=exc.reason)


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """FastAPI's 422, except that a rejected secret is not echoed back (nor into proxy logs)."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {k: v for k, v in error.items() if k != "input"}
        if error.get("loc", ())[-1:] == ("secret",)
        else error
        for error in exc.errors()
    ]
    return await request_validation_exception_handler(request, RequestValidationError(errors))


async def _unavailable(request: Request, exc: Exception) -> Response:
    logger.warning("%s %s: %s", request.method, request.url.path, exc)
    return problem(503, str(exc), retry_after=RETRY_AFTER_S)


def _document_event_schema(app: FastAPI) -> None:
    """Add `Event` (read from raw bytes, not a FastAPI body parameter) to the OpenAPI
    components, and the API key schemes to the guarded operations (the key check reads its
    headers itself, which FastAPI cannot see)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            event = Event.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(event.pop("$defs", {}))
            components["Event"] = event
            app.openapi_schema = document_keys(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _tags(routers: Iterable[APIRouter]) -> list[str]:
    """Each router's tags, in router order, once."""
    return list(dict.fromkeys(str(tag) for router in routers for tag in router.tags))
