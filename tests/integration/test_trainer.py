"""The trainer and model snapshots against a real broker and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from consumers.deadletter import DeadLetterSink
from consumers.trainer import Trainer
from models.labels import encode_samples
from models.snapshot import dump_snapshot
from models.training import TrainingState
from service.bus import ensure_parcours_topics, make_producer, samples_dead_letter_topic
from service.learning import fresh_training, snapshot_store
from service.metrics import ModelMetrics, TrainerMetrics
from service.settings import Settings
from service.snapshots import ModelRegistry
from service.store import connect_redis
from tests.support import produce, read_records, synthetic_samples


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    await ensure_parcours_topics(settings)
    client = connect_redis(settings.redis.url, socket_timeout_s=1.0, max_connections=4)
    try:
        yield client
    finally:
        await client.aclose()


def _fresh(settings: Settings, min_samples: int = 20) -> TrainingState:
    from models.journeymap import load_journey_map

    models = settings.models.model_copy(update={"min_samples": min_samples})
    return fresh_training(models, load_journey_map("retail"))


async def _trainer(settings: Settings, redis: Redis, producer: object) -> Trainer:
    trainer = Trainer(
        lambda: _fresh(settings),
        snapshot_store(redis, settings.redis),
        DeadLetterSink(producer, samples_dead_letter_topic(settings), group="trainer", timeout_s=5),  # type: ignore[arg-type]
        TrainerMetrics(CollectorRegistry()),
        every_samples=100,
        every_s=3600,
    )
    await trainer.restore()
    return trainer


async def test_trainer_killed_between_snapshots_relearns_the_rest_exactly_once(
    settings: Settings, redis: Redis
) -> None:
    samples = synthetic_samples(300)
    messages = [(s.customer_id.encode(), s.to_json()) for s in samples]
    messages.insert(120, (b"x", b'{"kind": "abandonment"'))  # not a sample: dead-lettered
    messages += [(s.customer_id.encode(), s.to_json()) for s in samples[250:260]]  # republished
    bootstrap, topic = settings.kafka.bootstrap or "", settings.models.samples_topic
    records = await read_records(bootstrap, topic, await produce(bootstrap, topic, messages))
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        first = await _trainer(settings, redis, producer)
        await first.handle(records[:201])  # 200 samples and the bad record: snapshot v1
        await first.handle(records[201:260])  # learned, never snapshotted: lost in the kill
        assert first.version == 1

        second = await _trainer(settings, redis, producer)
        assert second.state.offsets == {0: 201}
        assert second.state.abandonment.samples_seen + second.state.next_stage.samples_seen == 200
        await second.handle(records)  # the group redelivers from its committed offset
    finally:
        await producer.stop()

    learned = second.state.abandonment.samples_seen + second.state.next_stage.samples_seen
    assert learned == len(samples)
    assert second.version == 2  # the 100 samples after v1 made it due again
    assert second.state.abandonment.metrics()["roc_auc"] > 0.7, second.state.summary()


async def test_trainer_packed_records_learns_each_sample_and_dead_letters_bad_items(
    settings: Settings, redis: Redis
) -> None:
    samples = synthetic_samples(40)
    bad = b'[{"kind": "abandonment"},' + samples[30].to_json() + b"]"
    messages = [
        (None, encode_samples(samples[:20])),
        (None, encode_samples(samples[10:30])),  # half republished: learned once
        (b"x", bad),  # the valid sample in it is still learned
        (b"y", b"[not json"),
        (None, encode_samples(samples[31:])),
    ]
    bootstrap, topic = settings.kafka.bootstrap or "", settings.models.samples_topic
    records = await read_records(bootstrap, topic, await produce(bootstrap, topic, messages))
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        trainer = await _trainer(settings, redis, producer)
        await trainer.handle(records)
    finally:
        await producer.stop()

    learned = trainer.state.abandonment.samples_seen + trainer.state.next_stage.samples_seen
    assert learned == len(samples)
    assert trainer.state.offsets == {0: len(messages)}
    letters = await read_records(bootstrap, samples_dead_letter_topic(settings), {0: 2})
    assert [r.value for r in letters] == [bad, b"[not json"]
    errors = orjson.loads(dict(letters[0].headers)["parcours.dlq.errors"])
    assert [e["loc"] for e in errors] == [[0]]


async def test_registry_hot_reloads_newer_snapshots_and_refuses_a_corrupt_one(
    settings: Settings, redis: Redis
) -> None:
    store = snapshot_store(redis, settings.redis)
    metrics = ModelMetrics(CollectorRegistry())
    registry = ModelRegistry(store, metrics, interval_s=0)
    state = _fresh(settings)
    for sample in synthetic_samples(60):
        state.learn(sample)
    assert await registry.refresh() is None

    v1 = await store.publish(dump_snapshot(state, {}), {"models": {}}, replaces=0)
    assert (await registry.refresh()).version == v1  # type: ignore[union-attr]
    v2 = await store.publish(b"not a snapshot", {"models": {}}, replaces=v1)
    served = await registry.refresh()
    v3 = await store.publish(dump_snapshot(state, {}), {"models": {}}, replaces=v2)
    reloaded = await registry.refresh()

    assert served is not None
    assert served.version == v1
    assert metrics.refused._value.get() == 1
    assert reloaded is not None
    assert reloaded.version == v3
    assert isinstance(reloaded.models, TrainingState)
    assert metrics.loaded._value.get() == 2


async def test_second_trainer_publishing_over_the_first_is_refused(
    settings: Settings, redis: Redis
) -> None:
    from service.snapshots import SnapshotConflict

    store = snapshot_store(redis, settings.redis)
    await store.publish(b"a", {}, replaces=0)

    with pytest.raises(SnapshotConflict, match="another trainer"):
        await store.publish(b"b", {}, replaces=0)
