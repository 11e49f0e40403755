"""The learning path as processes: SIGKILL the consumer while a label is pending, then train."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from models.labels import Sample, decode_samples
from service.bus import ensure_parcours_topics
from service.learning import snapshot_store
from service.store import connect_redis, journey_store
from tests.conftest import make_settings
from tests.e2e.conftest import Role
from tests.support import produce, read_until_quiet, settings_env, wait_until

pytestmark = pytest.mark.slow

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _event(customer: str, n: int, kind: str, minutes: float, **props: Any) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"{customer}-{n}",
            "customer_id": customer,
            "type": kind,
            "channel": "web",
            "timestamp": (T0 + timedelta(minutes=minutes)).isoformat(),
            "properties": props,
        }
    )


async def test_label_pending_across_a_consumer_kill_resolves_once_and_is_learned_once(
    kafka_bootstrap: str, redis_url: str, roles: list[Role], tmp_path: Path
) -> None:
    settings = make_settings(
        kafka_bootstrap, redis_url, models={"min_samples": 1, "snapshot_every_s": 0.5},
        partitions=1,
    )  # fmt: skip
    await ensure_parcours_topics(settings)
    env = settings_env(settings) | {
        "PARCOURS_MODELS_MIN_SAMPLES": "1",
        "PARCOURS_MODELS_SNAPSHOT_EVERY_S": "0.5",
    }
    topic = settings.kafka.events_topic
    redis = connect_redis(redis_url, socket_timeout_s=2, max_connections=2)
    store = journey_store(redis, settings.redis)

    def start(args: list[str], name: str) -> Role:
        role = Role(args, env, tmp_path / f"{name}.log")
        roles.append(role)
        return role

    async def book_pending() -> bool:
        loaded = await store.load_many(["dave"], with_labels=True)
        return loaded[0].labels is not None

    first = start(["consume"], "first")
    await produce(
        kafka_bootstrap, topic,
        [(b"dave", _event("dave", 1, "product_view", 0, product_id="p1")),
         (b"dave", _event("dave", 2, "add_to_cart", 1, product_id="p1", price=9.5))],
    )  # fmt: skip
    await wait_until(book_pending, timeout_s=120)
    first.kill()  # the cart is open and its label pending: the consumer dies

    start(["consume"], "restarted")
    trainer = start(["train"], "trainer")
    await produce(kafka_bootstrap, topic, [(b"erin", _event("erin", 1, "page_view", 90))])

    async def samples() -> list[Sample]:
        models = settings.models
        records = await read_until_quiet(kafka_bootstrap, models.samples_topic, 1)
        return [s for r in records for s in decode_samples(r.value)]

    async def dave_resolved() -> list[Sample]:
        return [s for s in await samples() if s.customer_id == "dave" and s.kind == "abandonment"]

    abandoned = await wait_until(dave_resolved, timeout_s=120)
    snapshots = snapshot_store(redis, settings.redis)

    progress: dict[str, object] = {}

    async def both_learned() -> bool:
        # dave's first event moved him on (a next-stage sample) and his cart was abandoned
        snapshot = await snapshots.fetch(blob=False)
        learned = snapshot and {k: m["samples"] for k, m in snapshot.meta["models"].items()}
        progress.update(learned=learned, version=snapshot and snapshot.version)
        return learned == {"abandonment": 1, "next_stage": 1}

    try:
        await wait_until(both_learned, timeout_s=120)
    except AssertionError as exc:  # say what the samples topic held and what each role saw
        found = [(s.id, s.kind, s.label, s.at) for s in await samples()]
        logs = "\n".join(f"--- {r.log.name}\n{r.output()[-4000:]}" for r in roles)
        raise AssertionError(f"{exc}: {progress}\nsamples on the topic: {found}\n{logs}") from None
    all_samples = await samples()
    await redis.aclose()

    assert [(s.label, s.at) for s in abandoned] == [(True, _ms(1))]
    assert sorted(Counter(s.id for s in all_samples).values()) == [1, 1]
    assert "published model snapshot" in trainer.output()


def _ms(minutes: float) -> int:
    return int((T0 + timedelta(minutes=minutes)).timestamp() * 1000)
