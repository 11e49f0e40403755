"""The trainer and model snapshots against a real broker and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import orjson
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from consumers.deadletter import DeadLetterSink
from consumers.trainer import Trainer
from models.labels import ABANDONMENT, Sample, encode_samples
from models.snapshot import dump_snapshot
from models.training import TrainingState
from service.bus import ensure_parcours_topics, make_producer, samples_dead_letter_topic
from service.learning import fresh_training, snapshot_store
from service.metrics import ModelMetrics, TrainerMetrics
from service.settings import Settings
from service.snapshots import ModelRegistry
from service.store import connect_redis
from tests.support import produce, read_records, synthetic_samples

_MODELS = ("abandonment", "next_stage")


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


async def _trainer(
    settings: Settings, redis: Redis, producer: object, metrics: TrainerMetrics | None = None
) -> Trainer:
    trainer = Trainer(
        lambda: _fresh(settings),
        snapshot_store(redis, settings.redis),
        DeadLetterSink(producer, samples_dead_letter_topic(settings), group="trainer", timeout_s=5),  # type: ignore[arg-type]
        metrics or TrainerMetrics(CollectorRegistry()),
        every_samples=100,
        every_s=3600,
    )
    await trainer.restore()
    return trainer


def _windowed(settings: Settings, quality_window: int) -> Settings:
    models = settings.models.model_copy(update={"quality_window": quality_window})
    return settings.model_copy(update={"models": models})


def _relation_flipped(samples: Sequence[Sample]) -> list[Sample]:
    """The same customers after a change: carts the model would call converted are abandoned
    (and the other way round), and customers stay in their stage instead of moving on."""
    return [replace(s, label=not s.label if s.kind == ABANDONMENT else s.stage) for s in samples]


def _gauges(metrics: TrainerMetrics, name: str, model: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and sample.labels["model"] == model:
                found[sample.labels["metric"]] = sample.value
    return found


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


async def test_trainer_label_relation_flips_rolling_metrics_drop_lifetime_ones_stay_high(
    settings: Settings, redis: Redis
) -> None:
    settings = _windowed(settings, 200)
    samples = synthetic_samples(2800)
    stream = [*samples[:2400], *_relation_flipped(samples[2400:])]
    messages = [(None, encode_samples(stream[i : i + 100])) for i in range(0, len(stream), 100)]
    bootstrap, topic = settings.kafka.bootstrap or "", settings.models.samples_topic
    records = await read_records(bootstrap, topic, await produce(bootstrap, topic, messages))
    metrics = TrainerMetrics(CollectorRegistry(), quality_window=200)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        trainer = await _trainer(settings, redis, producer, metrics)
        await trainer.handle(records[:24])
        steady = {m: _gauges(metrics, "parcours_model_rolling_metric", m) for m in _MODELS}
        await trainer.handle(records[24:])
    finally:
        await producer.stop()

    lifetime = {m: _gauges(metrics, "parcours_model_progressive_metric", m) for m in _MODELS}
    rolling = {m: _gauges(metrics, "parcours_model_rolling_metric", m) for m in _MODELS}
    assert steady["abandonment"]["roc_auc"] > 0.9, steady
    assert steady["next_stage"]["accuracy"] > 0.9, steady
    assert lifetime["abandonment"]["roc_auc"] > 0.85, lifetime
    assert rolling["abandonment"]["roc_auc"] < lifetime["abandonment"]["roc_auc"] - 0.2, rolling
    assert lifetime["next_stage"]["accuracy"] > 0.65, lifetime
    assert rolling["next_stage"]["accuracy"] < lifetime["next_stage"]["accuracy"] - 0.3, rolling
    assert rolling["next_stage"]["log_loss"] > lifetime["next_stage"]["log_loss"], rolling
    for model in _MODELS:
        window = metrics.registry.get_sample_value(
            "parcours_model_rolling_window_samples", {"model": model}
        )
        assert window == 200
    assert "last 200 samples" in _help(metrics, "parcours_model_rolling_metric")


async def test_trainer_window_of_one_label_drops_its_rolling_roc_auc_not_the_lifetime_one(
    settings: Settings, redis: Redis
) -> None:
    settings = _windowed(settings, 100)
    samples = synthetic_samples(800)
    abandoned = [replace(s, label=True) if s.kind == ABANDONMENT else s for s in samples[400:]]
    messages = [(None, encode_samples(samples[:400])), (None, encode_samples(abandoned))]
    bootstrap, topic = settings.kafka.bootstrap or "", settings.models.samples_topic
    records = await read_records(bootstrap, topic, await produce(bootstrap, topic, messages))
    metrics = TrainerMetrics(CollectorRegistry(), quality_window=100)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        trainer = await _trainer(settings, redis, producer, metrics)
        await trainer.handle(records[:1])
        before = _gauges(metrics, "parcours_model_rolling_metric", "abandonment")
        await trainer.handle(records[1:])  # the last 100 carts were all abandoned
    finally:
        await producer.stop()

    rolling = _gauges(metrics, "parcours_model_rolling_metric", "abandonment")
    assert "roc_auc" in before
    assert set(rolling) == {"log_loss", "brier", "positive_rate"}
    assert rolling["positive_rate"] == 1.0
    assert "roc_auc" in _gauges(metrics, "parcours_model_progressive_metric", "abandonment")


async def test_trainer_restored_from_snapshot_keeps_its_window_resized_to_the_setting(
    settings: Settings, redis: Redis
) -> None:
    samples = synthetic_samples(1000)
    messages = [(None, encode_samples(samples[i : i + 100])) for i in range(0, 1000, 100)]
    bootstrap, topic = settings.kafka.bootstrap or "", settings.models.samples_topic
    records = await read_records(bootstrap, topic, await produce(bootstrap, topic, messages))
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        first = await _trainer(_windowed(settings, 400), redis, producer)
        await first.handle(records)  # one batch, so one snapshot: of all 1000 samples
        narrow = _fresh(_windowed(settings, 150))
        for sample in samples:
            narrow.learn(sample)
        metrics = TrainerMetrics(CollectorRegistry(), quality_window=150)
        second = await _trainer(_windowed(settings, 150), redis, producer, metrics)
    finally:
        await producer.stop()

    snapshot = await snapshot_store(redis, settings.redis).fetch(blob=False)
    assert snapshot is not None
    published = snapshot.meta["models"]["abandonment"]
    assert published["rolling_samples"] == 400
    assert published["rolling_metrics"] == first.state.abandonment.rolling_metrics()
    assert second.version == first.version
    assert second.state.quality_window == 150
    for model in _MODELS:
        assert _gauges(metrics, "parcours_model_rolling_metric", model) == pytest.approx(
            narrow.summary()[model]["rolling_metrics"]
        )
        assert metrics.registry.get_sample_value(
            "parcours_model_rolling_window_samples", {"model": model}
        ) == min(150, narrow.summary()[model]["samples"])


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


def _help(metrics: TrainerMetrics, name: str) -> str:
    (family,) = [f for f in metrics.registry.collect() if f.name == name]
    return family.documentation
