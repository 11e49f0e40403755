"""Wiring for in-process worker tests: a real store, decoder, fold and dead-letter producer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from consumers.analytics_recording import AnalyticsRecording, analytics_recording
from consumers.deadletter import DeadLetterSink
from consumers.experimenting import Experimenting
from consumers.labelling import Labelling, SampleSink
from consumers.state_updater import StateUpdater
from consumers.triggering import Triggering
from models.fold import Fold
from models.trigger_rules import Caps
from service.bus import ensure_parcours_topics, make_producer
from service.errors import StoreUnavailable
from service.experiments import ExperimentBook, ExperimentStore
from service.journey import build_decoder, build_fold
from service.learning import build_labeler
from service.metrics import ConsumerMetrics
from service.scoring import LiveScorer
from service.settings import Settings
from service.store import JourneyStore, Stored, Write, connect_redis, journey_store
from tests.support import Record, produce, read_records

S = TypeVar("S", bound=JourneyStore)


@dataclass
class Worker:
    settings: Settings
    redis: Redis
    store: JourneyStore
    fold: Fold
    producer: AIOKafkaProducer
    metrics: ConsumerMetrics

    async def records(self, messages: Sequence[tuple[bytes | None, bytes | None]]) -> list[Record]:
        """`messages` produced to the events topic and read back as the consumer gets them."""
        kafka = self.settings.kafka
        ends = await produce(kafka.bootstrap or "", kafka.events_topic, messages)
        return await read_records(kafka.bootstrap or "", kafka.events_topic, ends)

    def store_as(self, kind: type[S]) -> S:
        """A journey store of a `JourneyStore` subclass (one that fails or races on purpose),
        on the worker's Redis and key space."""
        redis = self.settings.redis
        return kind(self.redis, prefix=redis.key_prefix, ttl_ms=60_000, shards=redis.journey_shards)

    def saving_store(self, *, fail_at: int | None = None) -> tuple[JourneyStore, list[int]]:
        """A journey store that records the size of each journey write call, and whose call
        number `fail_at` (from 1) raises `StoreUnavailable`, as if Redis went away; and the
        list of sizes."""
        saves: list[int] = []

        class Saving(JourneyStore):
            async def save_many(self, writes: Sequence[Write]) -> list[int]:
                saves.append(len(writes))
                if len(saves) == fail_at:
                    raise StoreUnavailable("Redis went away")
                return await super().save_many(writes)

        return self.store_as(Saving), saves

    def loading_store(self) -> tuple[JourneyStore, list[list[str]]]:
        """A journey store that records the customers of each read call; and the list of them."""
        loads: list[list[str]] = []

        class Loading(JourneyStore):
            async def load_many(
                self, customer_ids: Sequence[str], *, with_labels: bool = False
            ) -> list[Stored]:
                loads.append(list(customer_ids))
                return await super().load_many(customer_ids, with_labels=with_labels)

        return self.store_as(Loading), loads

    def racing_store(self, other_writer: Callable[[], Awaitable[None]]) -> JourneyStore:
        """A journey store that lets `other_writer` run just before its own first write: a
        zombie racing the new owner of its partitions."""

        class Racing(JourneyStore):
            raced = False

            async def save_many(self, writes: Sequence[Write]) -> list[int]:
                if not self.raced:
                    self.raced = True
                    await other_writer()
                return await super().save_many(writes)

        return self.store_as(Racing)

    def updater(
        self,
        *,
        fold: Fold | None = None,
        store: JourneyStore | None = None,
        labelling: Labelling | None = None,
        triggering: Triggering | None = None,
        analytics: AnalyticsRecording | None = None,
        experimenting: Experimenting | None = None,
        chunk_records: int = 500,
    ) -> StateUpdater:
        fold = fold or self.fold
        sink = DeadLetterSink(
            self.producer,
            self.settings.kafka.dead_letter_topic,
            group=self.settings.kafka.consumer_group,
            timeout_s=5,
        )
        return StateUpdater(
            store or self.store,
            build_decoder(self.settings.journey, fold.map),
            fold,
            sink,
            self.metrics,
            chunk_records=chunk_records,
            labelling=labelling,
            triggering=triggering,
            analytics=analytics,
            experimenting=experimenting,
        )

    def triggering(
        self, *, at_risk_threshold: float = 0.7, experimenting: Experimenting | None = None
    ) -> Triggering:
        """Trigger emission as `parcours consume` wires it, with the map's caps."""
        return Triggering(
            self.producer,
            self.settings.triggers.topic,
            self.metrics,
            caps=Caps(self.fold.map.trigger_caps),
            at_risk_threshold=at_risk_threshold,
            timeout_s=5,
            experimenting=experimenting,
        )

    def experimenting(self, scorer: LiveScorer, *, holdout: float = 0.0) -> Experimenting:
        """The experiment duty as `parcours consume` wires it (definitions reloaded always)."""
        config = self.settings.experiments
        book = ExperimentBook(
            ExperimentStore(self.redis, prefix=self.settings.redis.key_prefix),
            refresh_s=1e-9,
            initial_stage=self.fold.map.initial_stage,
        )
        return Experimenting(
            book,
            lambda: scorer.training.experiments,
            self.metrics,
            holdout=holdout,
            holdout_window_ms=config.holdout_window_s * 1000,
            holdout_success=[config.holdout_success],
        )

    def labelled_updater(
        self,
        *,
        scorer: LiveScorer | None = None,
        idle_advance_after_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        triggering: Triggering | None = None,
        analytics: AnalyticsRecording | None = None,
        experimenting: Experimenting | None = None,
        chunk_records: int = 500,
    ) -> StateUpdater:
        """An updater that also records labels, attaches scores and sweeps deadlines."""
        models = self.settings.models
        labelling = Labelling(
            build_labeler(models),
            self.store,
            SampleSink(self.producer, models.samples_topic, timeout_s=5),
            self.metrics,
            scorer=scorer,
            lateness_ms=int(models.allowed_lateness_s * 1000),
            idle_advance_after_s=idle_advance_after_s,
            clock=clock,
            triggering=triggering,
            experimenting=experimenting,
        )
        return self.updater(
            labelling=labelling,
            triggering=triggering,
            analytics=analytics,
            experimenting=experimenting,
            chunk_records=chunk_records,
        )

    def analytics(self, kind: type[AnalyticsRecording] = AnalyticsRecording) -> AnalyticsRecording:
        """Analytics recording as `parcours consume` wires it from the settings (as `kind`, a
        subclass that fails on purpose)."""
        return analytics_recording(self.settings, self.redis, self.metrics, self.fold.map, kind)

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels or None) or 0.0


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Worker]:
    kafka = settings.kafka
    await ensure_parcours_topics(settings)
    redis = connect_redis(settings.redis.url, socket_timeout_s=1.0, max_connections=8)
    producer = make_producer(kafka)
    await producer.start()
    store = journey_store(redis, settings.redis)
    try:
        yield Worker(
            settings, redis, store, build_fold(settings.journey), producer,
            ConsumerMetrics(CollectorRegistry()),
        )  # fmt: skip
    finally:
        await producer.stop()
        await redis.aclose()
