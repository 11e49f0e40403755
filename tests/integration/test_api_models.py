"""GET /v1/customers/{id}/predictions and GET /v1/models: cold start, hot reload, refusal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from models.events import Event
from models.fold import Position
from models.snapshot import dump_snapshot
from models.state import encode_state
from service.learning import snapshot_store
from service.settings import Settings
from service.store import Write
from tests.integration.api_fixtures import Api, event, running_api
from tests.integration.conftest import Worker
from tests.integration.test_trainer import _fresh
from tests.support import synthetic_samples


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with running_api(settings) as running:
        yield running


async def _journey_with_open_cart(worker: Worker, customer: str) -> None:
    events = [
        event(1, customer_id=customer, type="product_view", properties={"product_id": "p1"}),
        event(
            2,
            customer_id=customer,
            type="add_to_cart",
            timestamp="2026-11-20T10:20:00Z",
            properties={"product_id": "p1", "price": 30.0},
        ),
    ]
    state = worker.fold.fold(
        None, [(Event.model_validate(e), Position(0, i)) for i, e in enumerate(events)]
    )
    assert state is not None
    assert await worker.store.save_many([Write(customer, encode_state(state), 0)]) == []


async def _publish_warm_models(settings: Settings, worker: Worker, replaces: int = 0) -> int:
    state = _fresh(settings, min_samples=20)
    for sample in synthetic_samples(200):
        state.learn(sample)
    state.tag(replaces + 1)
    meta = {"models": state.summary(), "offsets": {}}
    store = snapshot_store(worker.redis, settings.redis)
    version = await store.publish(dump_snapshot(state, meta), meta, replaces=replaces)
    await asyncio.sleep(settings.models.reload_interval_s)  # readers look this often
    return version


async def test_predictions_cold_start_serve_the_fallback_and_say_so(
    api: Api, worker: Worker
) -> None:
    await _journey_with_open_cart(worker, "cold")

    body = (await api.client.get("/v1/customers/cold/predictions")).json()

    assert body["abandonment"]["model_version"] == "fallback"
    assert body["abandonment"]["drivers"] == []
    assert body["next_stage"]["model_version"] == "fallback"
    assert body["stage"] == "decision"
    assert abs(sum(body["next_stage"]["probabilities"].values()) - 1) < 1e-4
    assert body["as_of"] == "2026-11-20T10:20:00Z"


async def test_predictions_hot_reload_a_published_snapshot_without_restart(
    api: Api, worker: Worker, settings: Settings
) -> None:
    await _journey_with_open_cart(worker, "warm")
    before = (await api.client.get("/v1/customers/warm/predictions")).json()

    version = await _publish_warm_models(settings, worker)
    await worker.redis.hset(f"{settings.redis.key_prefix}:watermarks", "0", 1_900_000_000_000)
    after = (await api.client.get("/v1/customers/warm/predictions")).json()

    assert before["abandonment"]["model_version"] == "fallback"
    assert after["abandonment"]["model_version"] == f"abandonment-v{version}"
    assert after["next_stage"]["model_version"] == f"next_stage-v{version}"
    assert 0 < len(after["abandonment"]["drivers"]) <= 5
    assert after["as_of"].startswith("2030-03-17")  # the partition's watermark is "now"


async def test_models_lists_versions_samples_and_progressive_metrics(
    api: Api, worker: Worker, settings: Settings
) -> None:
    cold = (await api.client.get("/v1/models")).json()
    version = await _publish_warm_models(settings, worker)
    warm = (await api.client.get("/v1/models")).json()

    assert cold["snapshot_version"] is None
    assert {m["version"] for m in cold["models"]} == {"fallback"}
    assert warm["snapshot_version"] == version
    by_name = {m["name"]: m for m in warm["models"]}
    assert by_name["abandonment"]["samples"] == 100
    assert set(by_name["abandonment"]["metrics"]) >= {"roc_auc", "log_loss", "brier"}
    assert set(by_name["next_stage"]["metrics"]) >= {"accuracy", "macro_f1", "log_loss"}
    assert by_name["next_stage"]["rolling_samples"] == 100  # fewer than the window so far
    assert by_name["next_stage"]["rolling_metrics"] == by_name["next_stage"]["metrics"]


async def test_corrupt_snapshot_is_refused_and_the_served_one_kept(
    api: Api, worker: Worker, settings: Settings
) -> None:
    await _journey_with_open_cart(worker, "kept")
    version = await _publish_warm_models(settings, worker)
    assert (await api.client.get("/v1/customers/kept/predictions")).status_code == 200
    store = snapshot_store(worker.redis, settings.redis)
    await store.publish(b"\x00corrupt", {"models": {}}, replaces=version)
    await asyncio.sleep(settings.models.reload_interval_s)

    body = (await api.client.get("/v1/customers/kept/predictions")).json()
    metrics = (await api.client.get("/metrics")).text

    assert body["abandonment"]["model_version"] == f"abandonment-v{version}"
    assert "parcours_model_snapshots_refused_total 1.0" in metrics
    assert 'parcours_model_served_metric{metric="roc_auc",model="abandonment"}' in metrics


async def test_predictions_unknown_customer_404(api: Api) -> None:
    response = await api.client.get("/v1/customers/nobody/predictions")

    assert response.status_code == 404
    assert "nobody" in response.json()["detail"]
