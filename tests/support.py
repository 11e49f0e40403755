"""Helpers shared by integration and end-to-end tests: real producing, reading and waiting."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from models.catalog import Catalog, CatalogUpdate, catalog_update
from models.cooccurrence import CoOccurrence
from models.errors import InvalidEvent
from models.events import EXPOSURE_TYPE, EventDecoder
from models.experiments import announce, resolve
from models.features import BASE_FEATURES
from models.fold import Fold, Position
from models.labels import ABANDONMENT, NEXT_STAGE, Kind, Label, Sample
from models.state import JourneyState, decode_state
from models.trending import Trending
from service.api.schemas import JourneyPublic
from service.journey import build_decoder, build_fold
from service.replay import SAMPLE_FILE, read_lines
from service.settings import JourneySettings, RecommendSettings, Settings
from service.store import JourneyStore

Record = Any  # aiokafka ConsumerRecord


async def produce(
    bootstrap: str, topic: str, messages: Sequence[tuple[bytes | None, bytes | None]]
) -> dict[int, int]:
    """Produce (key, value) pairs and return the end offset per partition they reached."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        sent = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    ends: dict[int, int] = {}
    for meta in sent:
        ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    return ends


async def read_records(bootstrap: str, topic: str, ends: dict[int, int]) -> list[Record]:
    """Every record of `topic` below `ends`, per partition in offset order (no group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Record] = []
        deadline = time.monotonic() + 30
        while [tp for tp in tps if await consumer.position(tp) < ends[tp.partition]]:
            assert time.monotonic() < deadline, "timed out reading back the topic"
            batch = await consumer.getmany(timeout_ms=500)
            for tp_records in batch.values():
                records += [r for r in tp_records if r.offset < ends[r.partition]]
    finally:
        await consumer.stop()
    return sorted(records, key=lambda r: (r.partition, r.offset))


async def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets, read without joining it."""
    watcher = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await watcher.start()
    try:
        return {
            p: (await watcher.committed(TopicPartition(topic, p))) or 0 for p in range(partitions)
        }
    finally:
        await watcher.stop()


async def wait_until(
    predicate: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.1
) -> Any:
    """Poll an async or sync predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)


async def committed_total(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    """How many records the group has committed over all partitions."""
    return sum((await committed(bootstrap, group, topic, partitions)).values())


async def caught_up(
    bootstrap: str, group: str, topic: str, ends: dict[int, int], partitions: int
) -> bool:
    """The group has committed every partition up to `ends`."""
    offsets = await committed(bootstrap, group, topic, partitions)
    return offsets == {p: ends.get(p, 0) for p in range(partitions)}


def expected_catalog(fold: Fold, records: Sequence[Record], settings: RecommendSettings) -> Catalog:
    """The pure catalog learned from the log's valid events, each applied once, in offset order."""
    decoder = EventDecoder(fold.map.event_types)
    now_ms = int(time.time() * 1000)
    day, hour = 86_400_000, 3_600_000
    catalog = Catalog(
        CoOccurrence(
            half_life_ms=int(settings.cooccurrence_half_life_days * day),
            top_k=settings.neighbours_kept,
            max_basket=settings.max_basket,
        ),
        Trending(int(settings.trending_half_life_hours * hour), settings.trending_kept),
    )
    states: dict[str, JourneyState] = {}
    lessons = []
    for record in records:
        try:
            event = decoder.decode(record.value, now_ms)
        except InvalidEvent:
            continue
        before = states.get(event.customer_id)
        cart = before.cart.items if before is not None else {}
        lesson = catalog_update(
            cart, event, record.partition, record.offset, max_basket=settings.max_basket
        )
        position = Position(record.partition, record.offset)
        after, skipped = fold.step(before, event, position)
        states[event.customer_id] = after
        if skipped is None:
            tick = CatalogUpdate(record.partition, record.offset, event.timestamp_ms, (), (), ())
            lessons.append(lesson or tick)
    catalog.learn(lessons)
    return catalog


def expected_states(
    fold: Fold, records: Sequence[Record], *, outcomes: bool = False
) -> dict[str, JourneyState]:
    """The pure fold of the log's valid events, customer by customer, in offset order.

    With `outcomes`, also what the state consumer's experiment duty decides on event time:
    each applied event resolves the customer's open exposures, and every exposure has been
    counted (announced) by the end. No window ends by the watermark alone here.
    """
    decoder = EventDecoder(fold.map.event_types)
    now_ms = int(time.time() * 1000)
    states: dict[str, JourneyState] = {}
    for record in records:
        try:
            event = decoder.decode(record.value, now_ms)
        except InvalidEvent:
            continue
        position = Position(record.partition, record.offset)
        state, skipped = fold.step(states.get(event.customer_id), event, position)
        states[event.customer_id] = state
        if outcomes and skipped is None and state.personalization:
            resolve(state.experiments, event.type, event.timestamp_ms)
    if outcomes:
        for state in states.values():
            announce(state.experiments)
    return states


_TYPES = (
    ["page_view"] * 4 + ["product_view"] * 8 + ["search"] * 2 + ["add_to_cart"] * 3
    + ["remove_from_cart", "checkout_started", "purchase", "email_open", "email_click",
       "ad_click", "review_read", "review_written", "referral", "app_open"]
)  # fmt: skip
_CHANNELS = ("web", "app", "email", "ads", "social", "store")


def journey_stream(
    customers: int, events: int, *, seed: int = 7, start: datetime | None = None
) -> list[dict[str, Any]]:
    """A reproducible stream of realistic contract events across `customers` customers."""
    rng = random.Random(seed)
    clock = start or datetime(2026, 11, 1, tzinfo=UTC)
    stream = []
    for i in range(events):
        clock += timedelta(milliseconds=rng.randint(1, 400))
        kind = rng.choice(_TYPES)
        props: dict[str, Any] = {"url": f"https://shop.example/p/{i % 97}"}
        if kind in ("product_view", "add_to_cart", "remove_from_cart") or rng.random() < 0.3:
            props |= {
                "product_id": f"sku-{rng.randint(1, 60)}",
                "category": f"cat-{rng.randint(1, 8)}",
            }
            props["price"] = round(rng.uniform(1, 200), 2)
            props["quantity"] = rng.randint(1, 3)
        if kind == "purchase" and rng.random() < 0.5:
            props["order_id"] = f"o-{i}"
        stream.append(
            {
                "event_id": f"e-{seed}-{i}",
                "customer_id": f"c-{rng.randint(1, customers)}",
                "type": kind,
                "channel": rng.choice(_CHANNELS),
                "timestamp": clock.isoformat().replace("+00:00", "Z"),
                "session_id": f"s-{i // 50}",
                "properties": props,
            }
        )
    return stream


def with_exposures(
    events: Sequence[dict[str, Any]], *, seed: int, every: int = 10
) -> list[dict[str, Any]]:
    """`events` with an `experiment_exposure` of the same customer, at the same time, after
    every `every`-th one: one of three experiments, either variant, converting on purchase."""
    rng = random.Random(seed)
    stream: list[dict[str, Any]] = []
    for i, event in enumerate(events):
        stream.append(event)
        if i % every == every // 2:
            exposure = {
                "experiment": f"exp-{i % 3}", "variant": rng.choice(["a", "b"]),
                "success": ["purchase"], "window_s": 86_400,
            }  # fmt: skip
            stream.append(
                {
                    "event_id": f"x-{seed}-{i}",
                    "customer_id": event["customer_id"],
                    "type": EXPOSURE_TYPE,
                    "channel": event["channel"],
                    "timestamp": event["timestamp"],
                    "properties": {"exposure": exposure},
                }
            )
    return stream


def keyed(events: Sequence[dict[str, Any]]) -> list[tuple[bytes | None, bytes | None]]:
    return [(e["customer_id"].encode(), orjson.dumps(e)) for e in events]


def with_client_faults(
    events: Sequence[dict[str, Any]], *, seed: int, retried: float = 0.02, poison: int = 0
) -> list[tuple[bytes | None, bytes | None]]:
    """`events` keyed, with a share `retried` of them sent again later (client retries) and
    `poison` records that break the contract, at reproducible places."""
    rng = random.Random(seed)
    messages = keyed(events)
    for index in rng.sample(range(len(events) - 1000), int(len(events) * retried)):
        retry_at = rng.randint(index + 1, len(messages))
        messages.insert(retry_at, keyed([events[index]])[0])
    for message in [(b"bad", b'{"event_id": "p%d", "type": ' % i) for i in range(poison)]:
        messages.insert(rng.randint(0, len(messages)), message)
    return messages


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that give a child process the same isolated settings."""
    kafka, redis = settings.kafka, settings.redis
    return {
        "PARCOURS_KAFKA_BOOTSTRAP": kafka.bootstrap or "",
        "PARCOURS_KAFKA_EVENTS_TOPIC": kafka.events_topic,
        "PARCOURS_KAFKA_DEAD_LETTER_TOPIC": kafka.dead_letter_topic,
        "PARCOURS_KAFKA_CONSUMER_GROUP": kafka.consumer_group,
        "PARCOURS_KAFKA_PARTITIONS": str(kafka.partitions),
        "PARCOURS_KAFKA_SESSION_TIMEOUT_MS": str(kafka.session_timeout_ms),
        "PARCOURS_KAFKA_HEARTBEAT_INTERVAL_MS": str(kafka.heartbeat_interval_ms),
        "PARCOURS_KAFKA_FETCH_MAX_WAIT_MS": str(kafka.fetch_max_wait_ms),
        "PARCOURS_JOURNEY_MAP": settings.journey.map,
        "PARCOURS_API_AUTH": str(settings.api.auth).lower(),
        "PARCOURS_REDIS_URL": redis.url or "",
        "PARCOURS_REDIS_KEY_PREFIX": redis.key_prefix,
        "PARCOURS_CONSUMER_METRICS_PORT": "0",
        "PARCOURS_MODELS_SAMPLES_TOPIC": settings.models.samples_topic,
        "PARCOURS_TRIGGERS_TOPIC": settings.triggers.topic,
        "PARCOURS_MODELS_TRAINER_GROUP": settings.models.trainer_group,
        "PARCOURS_MODELS_TRAINER_METRICS_PORT": "0",
        "PARCOURS_MODELS_RELOAD_INTERVAL_S": str(settings.models.reload_interval_s),
        **{
            f"PARCOURS_WEBHOOKS_{name.upper()}": str(value)
            for name, value in settings.webhooks.model_dump().items()
        },
    }


async def stored_states(
    store: JourneyStore, customers: Sequence[str]
) -> dict[str, JourneyState | None]:
    """What Redis holds for each customer, decoded, without the attached scores (and their
    history) and alerts.

    Scores are not part of the fold (they depend on the models served at the time), nor are
    the alerts of triggers sent, so the pure-fold oracle cannot predict them; tests of scores
    and triggers read them separately.
    """
    loaded = await store.load_many(list(customers))
    states = {
        c: decode_state(s.state) if s.state is not None else None
        for c, s in zip(customers, loaded, strict=True)
    }
    for state in states.values():
        if state is not None:
            state.predictions = None
            state.score_history = []
            state.alerts = {}
    return states


async def read_until_quiet(bootstrap: str, topic: str, partitions: int) -> list[Record]:
    """Everything in a small topic whose end is unknown: read until a poll comes back empty.

    (Tansu's ListOffsets answers are unreliable, so end offsets cannot be asked for.)
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found: list[Record] = []
        while batch := await consumer.getmany(timeout_ms=2000):
            for records in batch.values():
                found += records
    finally:
        await consumer.stop()
    return sorted(found, key=lambda r: (r.partition, r.offset))


STAGES = ["awareness", "consideration", "comparison", "decision", "purchase"]


def synthetic_samples(count: int, seed: int = 7) -> list[Sample]:
    """Samples with a learnable signal: the first feature decides abandonment."""
    rng = random.Random(seed)
    samples = []
    for i in range(count):
        x = [rng.random() for _ in BASE_FEATURES]
        stage = rng.choice(STAGES)
        kind: Kind
        label: Label
        if i % 2:
            kind, label = ABANDONMENT, x[0] > 0.5
        else:
            kind, label = NEXT_STAGE, STAGES[min(STAGES.index(stage) + 1, len(STAGES) - 1)]
        samples.append(Sample(f"s-{i}", kind, f"c{i % 17}", "retail", i, i + 1, stage, x, label))
    return samples


def sample_journeys() -> dict[str, JourneyPublic]:
    """What `parcours replay sample` leaves, per customer: the pure fold of the sample file."""
    fold = build_fold(JourneySettings())
    decoder = build_decoder(JourneySettings(), fold.map)
    states: dict[str, JourneyState] = {}
    for line in read_lines(SAMPLE_FILE):
        try:
            event = decoder.decode(line.raw, int(time.time() * 1000))
        except InvalidEvent:
            continue
        states[event.customer_id] = fold.apply(states.get(event.customer_id), event)
    return {c: JourneyPublic.from_state(s) for c, s in states.items()}
