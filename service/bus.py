"""Kafka clients built from settings, topic provisioning, and acknowledged event publishing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context

from models.events import Event
from service.errors import BusUnavailable, ConfigurationError
from service.instrumented import InstrumentedProducer
from service.metrics import DependencyMetrics
from service.settings import KafkaSettings, Settings

logger = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Connection options shared by producers, consumers and the admin client."""
    if not kafka.bootstrap:
        raise ConfigurationError(
            "PARCOURS_KAFKA_BOOTSTRAP is not set (use `parcours dev` for an embedded broker)"
        )
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap,
        "client_id": kafka.client_id,
        "request_timeout_ms": kafka.request_timeout_ms,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(cafile=kafka.ssl_cafile)
    if kafka.sasl_mechanism:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        password = kafka.sasl_password
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


def make_producer(
    kafka: KafkaSettings, metrics: DependencyMetrics | None = None
) -> AIOKafkaProducer:
    """A producer that waits for all in-sync replicas before acknowledging (and, with
    `metrics`, times each record to its acknowledgement)."""
    options: dict[str, Any] = {
        **client_options(kafka),
        "acks": "all",
        "linger_ms": kafka.linger_ms,
        "compression_type": kafka.compression_type,
        "enable_idempotence": kafka.enable_idempotence,
    }
    if metrics is not None:
        return InstrumentedProducer(metrics=metrics, **options)
    return AIOKafkaProducer(**options)


def make_consumer(kafka: KafkaSettings, *topics: str, group_id: str) -> AIOKafkaConsumer:
    """A group member that commits only when told to, starting from the earliest offset."""
    return AIOKafkaConsumer(
        *topics,
        **client_options(kafka),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        max_poll_interval_ms=kafka.max_poll_interval_ms,
        fetch_max_wait_ms=kafka.fetch_max_wait_ms,
        max_poll_records=kafka.max_batch,
    )


async def ensure_topics(
    kafka: KafkaSettings, names: Sequence[str], partitions: dict[str, int] | None = None
) -> None:
    """Create missing topics with the configured (or the given) partitions and replication."""
    counts = partitions or {}
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(n, counts.get(n, kafka.partitions), kafka.replication_factor) for n in names]
        )
    finally:
        await admin.close()
    for topic, code, message in response.topic_errors:
        if code not in (0, _TOPIC_ALREADY_EXISTS):
            raise ConfigurationError(f"cannot create topic {topic!r}: {message} (code {code})")


async def ensure_parcours_topics(settings: Settings) -> list[str]:
    """Create every topic the configured roles use; returns their names."""
    kafka, models, webhooks = settings.kafka, settings.models, settings.webhooks
    names = [kafka.events_topic, kafka.dead_letter_topic, settings.triggers.topic]
    partitions: dict[str, int] = {}
    if models.enabled:
        samples = [models.samples_topic, samples_dead_letter_topic(settings)]
        names += samples
        partitions = dict.fromkeys(samples, models.samples_partitions)
    names.append(webhooks.dead_letter_topic)  # triggers and their dead letters: by customer
    await ensure_topics(kafka, names, partitions)
    return names


def samples_dead_letter_topic(settings: Settings) -> str:
    return f"{settings.models.samples_topic}.dlq"


class ManagedProducer:
    """Owns a producer and keeps trying to connect it, so callers fail fast instead of hanging."""

    def __init__(
        self,
        factory: Callable[[], AIOKafkaProducer],
        *,
        prepare: Callable[[], Awaitable[None]] | None = None,
        retry_s: float = 2.0,
    ) -> None:
        self._factory = factory
        self._prepare = prepare
        self._retry_s = retry_s
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, wait_s: float = 0.0) -> None:
        """Begin connecting; wait up to `wait_s` for the first connection."""
        self._task = asyncio.create_task(self._connect(), name="kafka-producer-connect")
        if wait_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), wait_s)

    def get(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise BusUnavailable("not connected to Kafka yet")
        return self._producer

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def check(self, timeout_s: float) -> None:
        """Raise `BusUnavailable` unless a broker answers a metadata request in time."""
        producer = self.get()
        try:
            await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise BusUnavailable(f"Kafka did not answer: {exc!r}") from exc

    async def _connect(self) -> None:
        while True:
            producer = self._factory()
            try:
                if self._prepare is not None:
                    await self._prepare()
                await producer.start()
            except (KafkaError, OSError) as exc:
                logger.warning("Kafka producer cannot connect (%r); retrying", exc)
                await producer.stop()
                await asyncio.sleep(self._retry_s)
                continue
            self._producer = producer
            logger.info("Kafka producer connected")
            return


Headers = list[tuple[str, bytes]]


async def send_all(
    producer: AIOKafkaProducer,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes | None, Headers | None]],
    *,
    timeout_s: float,
) -> None:
    """Produce (key, value, headers) records and wait until the broker acknowledged all."""
    sends = [{"value": value, "key": key, "headers": headers} for key, value, headers in records]
    await _produce_all(producer, topic, sends, timeout_s)


async def send_to_partitions(
    producer: AIOKafkaProducer,
    topic: str,
    records: Sequence[tuple[int, bytes]],
    *,
    timeout_s: float,
) -> None:
    """Produce (partition, value) records without keys and wait until all are acknowledged."""
    sends = [{"value": value, "partition": partition} for partition, value in records]
    await _produce_all(producer, topic, sends, timeout_s)


async def partitions_of(producer: AIOKafkaProducer, topic: str, *, timeout_s: float) -> list[int]:
    """The topic's partitions, sorted as the default partitioner expects them."""
    try:
        async with asyncio.timeout(timeout_s):
            return sorted(await producer.partitions_for(topic))
    except (TimeoutError, KafkaError) as exc:
        raise BusUnavailable(f"topic {topic!r}: {exc!r}") from exc


async def _produce_all(
    producer: AIOKafkaProducer, topic: str, sends: list[dict[str, Any]], timeout_s: float
) -> None:
    if not sends:
        return
    try:
        async with asyncio.timeout(timeout_s):
            futures = [await producer.send(topic, **send) for send in sends]
            await asyncio.gather(*futures)
    except (TimeoutError, KafkaError) as exc:
        raise BusUnavailable(f"topic {topic!r}: {exc!r}") from exc


class Published(NamedTuple):
    accepted: list[str]
    failed: list[str]


class EventPublisher:
    """Produces events keyed by customer and reports which ones the broker acknowledged."""

    def __init__(self, producer: ManagedProducer, topic: str, *, timeout_s: float) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s

    async def publish(self, events: Sequence[Event]) -> Published:
        """Send and wait for acks; events not acknowledged within the timeout are `failed`."""
        try:
            producer = self._producer.get()
        except BusUnavailable:
            return Published([], [event.event_id for event in events])
        futures: list[asyncio.Future[Any]] = []

        async def enqueue() -> None:
            for event in events:
                key = event.customer_id.encode()
                futures.append(await producer.send(self._topic, event.to_json(), key=key))

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        with contextlib.suppress(TimeoutError, KafkaError):
            await asyncio.wait_for(enqueue(), self._timeout_s)
        if futures:
            await asyncio.wait(futures, timeout=max(0.0, deadline - loop.time()))
        accepted: list[str] = []
        failed: list[str] = []
        for index, event in enumerate(events):
            acked = index < len(futures) and _acknowledged(futures[index])
            (accepted if acked else failed).append(event.event_id)
        return Published(accepted, failed)


def _acknowledged(future: asyncio.Future[Any]) -> bool:
    if not future.done():
        future.cancel()
        return False
    return not future.cancelled() and future.exception() is None
