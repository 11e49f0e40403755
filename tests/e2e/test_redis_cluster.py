"""Every role on a three-primary Redis Cluster: no multi-key operation may cross a hash slot.

`parcours dev --replay sample` runs the API, the state consumer, the trainer and the
dispatcher against the cluster; the cluster itself refuses any script or transaction whose
keys fall in different slots, so each path that works here is cluster-safe.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from models.state import decode_state
from service.embedded import free_port
from service.settings import RedisSettings
from service.store import journey_store, learn_topology, redis_from_settings
from tests.e2e.conftest import Role, start_dev
from tests.receiver import Receiver
from tests.support import sample_journeys, wait_until

pytestmark = pytest.mark.slow


async def test_dev_on_a_redis_cluster_folds_learns_recommends_and_delivers(
    redis_cluster_url: str, roles: list[Role], tmp_path: Path
) -> None:
    prefix = f"cluster-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        "PARCOURS_KAFKA_BOOTSTRAP": "",  # embedded broker; Redis is the cluster
        "PARCOURS_REDIS_URL": redis_cluster_url,
        "PARCOURS_REDIS_CLUSTER": "true",
        "PARCOURS_REDIS_KEY_PREFIX": prefix,
        "PARCOURS_MODELS_SNAPSHOT_EVERY_S": "1",
        "PARCOURS_WEBHOOKS_SUBSCRIPTIONS_REFRESH_S": "0.2",
    }
    dev = await asyncio.to_thread(start_dev, roles, tmp_path, port, env, 180)
    receiver = Receiver()
    hook_url = await receiver.start()

    settings = RedisSettings(url=redis_cluster_url, cluster=True, key_prefix=prefix)
    redis = redis_from_settings(settings)
    await learn_topology(redis)
    store = journey_store(redis, settings)
    expected = sample_journeys()
    customers = sorted(expected)

    async def caught_up() -> bool:
        stored = await store.load_many(customers)
        return all(s.state is not None for s in stored) and [
            store_events(s.state) for s in stored
        ] == [expected[c].events_applied for c in customers]

    try:
        await wait_until(caught_up, timeout_s=120, interval_s=0.5)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
            for who in customers[:: max(1, len(customers) // 25)]:
                journey = (await api.get(f"/v1/customers/{who}/journey")).json()
                journey.pop("scores")
                journey.pop("score_history")  # models' view, not the fold's
                assert journey == expected[who].model_dump(
                    mode="json", exclude={"scores", "score_history"}
                )
            buyer = next(c for c in customers if expected[c].purchases.count)
            shown = await api.get(f"/v1/customers/{buyer}/recommendations")
            assert shown.status_code == 200, shown.text
            assert shown.json()["known"] is True
            batch = await api.post("/v1/recommendations:batch", json={"customer_ids": [buyer]})
            assert batch.status_code == 200, batch.text

            async def trained() -> bool:
                return (await api.get("/v1/models")).json()["snapshot_version"] is not None

            await wait_until(trained, timeout_s=120, interval_s=0.5)

            created = await api.post(
                "/v1/webhooks", json={"url": hook_url, "triggers": ["journey.stage_changed"]}
            )
            assert created.status_code == 201, created.text
            hook = created.json()
            loaded = "webhook subscriptions loaded: 1"  # before the triggers it must match
            await asyncio.to_thread(dev.wait_for_output, loaded, 30)
            now = datetime.now(UTC).isoformat()
            probe = {"customer_id": "cluster-probe", "channel": "web", "timestamp": now}
            sent = await api.post("/v1/events", json=[
                {**probe, "event_id": "probe-1", "type": "product_view",
                 "properties": {"product_id": "p-1"}},
                {**probe, "event_id": "probe-2", "type": "add_to_cart",
                 "properties": {"product_id": "p-1", "price": 12.5}},
            ])  # fmt: skip
            assert sent.status_code == 202, sent.text

            def delivered() -> bool:
                return any(b"cluster-probe" in r.body for r in receiver.delivered())

            await wait_until(delivered, timeout_s=60, interval_s=0.2)
            [moved] = [r for r in receiver.delivered() if b"cluster-probe" in r.body][:1]
            assert moved.verifies(hook["secret"])
            log = await api.get(f"/v1/webhooks/{hook['id']}/deliveries")
            assert log.status_code == 200, log.text
            assert any(d["outcome"] == "delivered" for d in log.json()["deliveries"]), log.text

        nodes = {redis.get_node_from_key(store.key(c)).name for c in customers}
        assert len(nodes) == 3, "journeys are spread over every primary"
    finally:
        await receiver.stop()
        await redis.aclose()
    dev.process.send_signal(signal.SIGINT)
    assert dev.process.wait(60) == 0, dev.output()[-3000:]


def store_events(state: bytes | None) -> int:
    """Events applied, read from a stored journey."""
    assert state is not None
    return decode_state(state).events_applied
