"""The fault suite: the whole stack (`parcours api`, `consume`, `train`, `dispatch`) under a
steady stream of events sent over HTTP, while, in turn, Redis is killed and restarted, the
broker freezes, each worker is SIGKILLed and restarted, and the webhook receiver refuses
everything for a while. Then: no accepted event lost, every journey equal to the pure fold of
the log, every trigger delivered or dead-lettered, and the API answered 503 (quickly, never
500) while a dependency was down, and recovered by itself.

The faults and what was measured are printed (pytest -s) and summarized in the README's
reliability section."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from models.webhooks import Subscription
from service.bus import ensure_parcours_topics
from service.embedded import EmbeddedKafka, EmbeddedRedis, free_port
from service.journey import build_fold
from service.settings import Settings
from service.store import connect_redis, journey_store
from service.subscriptions import SubscriptionStore
from tests.conftest import awake_map, make_settings
from tests.e2e.conftest import Role
from tests.receiver import OK, Behaviour, Receiver
from tests.support import (
    expected_states,
    journey_stream,
    read_until_quiet,
    settings_env,
    stored_states,
    wait_until,
)

pytestmark = pytest.mark.slow

CUSTOMERS, EVENTS, BATCH = 400, 8_000, 25
OUTAGE_S = 5.0
ANSWER_WITHIN_S = 8.0
"""A request while a dependency is down must be answered by then (the produce timeout is 5 s)."""


@dataclass
class Sender:
    """A storefront sending batches over HTTP and resending any batch not acknowledged, as a
    client should (event ids make resending safe)."""

    base: str
    batches: list[list[dict[str, Any]]]
    accepted: set[str] = field(default_factory=set)
    statuses: dict[int, int] = field(default_factory=dict)
    slowest_s: float = 0.0
    faults_done: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """The last tenth waits for the faults: each lands while events are still coming."""
        async with httpx.AsyncClient(base_url=self.base, timeout=30) as client:
            for index, batch in enumerate(self.batches):
                if index >= len(self.batches) * 9 // 10:
                    await self.faults_done.wait()
                while True:
                    started = time.monotonic()
                    try:
                        response = await client.post("/v1/events", json=batch)
                        status = response.status_code
                    except httpx.HTTPError:
                        status = 0
                    self.slowest_s = max(self.slowest_s, time.monotonic() - started)
                    self.statuses[status] = self.statuses.get(status, 0) + 1
                    if status == 202:
                        self.accepted |= set(response.json()["accepted"])
                        break
                    assert status in (0, 503), response.text
                    await asyncio.sleep(0.3)
                await asyncio.sleep(0.1)


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    tmp: Path
    roles: dict[str, Role] = field(default_factory=dict)
    port: int = field(default_factory=free_port)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, name: str) -> None:
        args = ["api", "--port", str(self.port)] if name == "api" else [name]
        log = self.tmp / f"{name}-{len(list(self.tmp.glob(f'{name}-*.log')))}.log"
        self.roles[name] = Role(args, self.env, log)

    def kill(self, name: str) -> None:
        self.roles[name].kill()
        self.roles[name].close()

    def close(self) -> None:
        for role in self.roles.values():
            role.close()


async def _answer(base: str, method: str, path: str, **kwargs: Any) -> tuple[int, float]:
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        try:
            status = (await client.request(method, path, **kwargs)).status_code
        except httpx.HTTPError:
            status = 0
    return status, time.monotonic() - started


@contextlib.asynccontextmanager
async def _infrastructure() -> AsyncIterator[tuple[EmbeddedKafka, EmbeddedRedis]]:
    """A broker and a Redis of this test's own, so it may freeze and kill them."""
    kafka, redis = EmbeddedKafka(), EmbeddedRedis(persistent=True)
    kafka.start()
    redis.start()
    try:
        yield kafka, redis
    finally:
        kafka.resume()
        redis.resume()
        kafka.close()
        redis.close()


async def test_the_stack_survives_each_fault_in_turn(tmp_path: Path) -> None:
    async with _infrastructure() as (kafka, redis):
        await _run_faults(kafka, redis, tmp_path)


async def _run_faults(kafka: EmbeddedKafka, redis: EmbeddedRedis, tmp: Path) -> None:
    settings = make_settings(
        kafka.bootstrap, redis.url, partitions=4, journey_map=awake_map(),
        webhooks={"allow_http": True, "allow_private_targets": True, "max_attempts": 4},
    )  # fmt: skip
    await ensure_parcours_topics(settings)
    receiver = Receiver()
    await receiver.start()
    client = connect_redis(redis.url, socket_timeout_s=2.0, max_connections=4)
    await SubscriptionStore(client, prefix=settings.redis.key_prefix).create(
        Subscription("wh-faults", receiver.url, frozenset(), "secret")
    )
    await client.aclose()
    stack = Stack(settings, settings_env(settings), tmp)
    for name in ("api", "consume", "train", "dispatch"):
        stack.start(name)
    events = journey_stream(customers=CUSTOMERS, events=EVENTS, seed=13)
    sender = Sender(stack.base, [events[i : i + BATCH] for i in range(0, EVENTS, BATCH)])
    report: list[str] = []
    try:
        await wait_until(lambda: _ready(stack.base), timeout_s=60, interval_s=0.3)
        sending = asyncio.create_task(sender.run())
        await asyncio.sleep(3)
        for fault in _faults(stack, kafka, redis, receiver):
            report.append(await fault())
            assert not sending.done(), "every fault must land mid-stream"
            await asyncio.sleep(2)
        sender.faults_done.set()
        await asyncio.wait_for(sending, timeout=240)
        report.append(f"sent {EVENTS} events: HTTP statuses {sender.statuses}, "
                      f"slowest answer {sender.slowest_s:.1f} s")  # fmt: skip
        report += await _check_outcome(settings, kafka, redis, receiver, sender)
    finally:
        print("\n".join(["", "fault suite:", *report]))
        stack.close()
        await receiver.stop()
    assert "Exception in ASGI application" not in _logs(tmp, "api-*.log")


def _logs(tmp: Path, pattern: str) -> str:
    return "".join(path.read_text(errors="replace") for path in sorted(tmp.glob(pattern)))


async def _ready(base: str) -> bool:
    return (await _answer(base, "GET", "/readyz"))[0] == 200


def _faults(
    stack: Stack, kafka: EmbeddedKafka, redis: EmbeddedRedis, receiver: Receiver
) -> list[Callable[[], Coroutine[Any, Any, str]]]:
    async def redis_restart() -> str:
        redis.kill()
        await asyncio.sleep(0.5)
        status, took = await _answer(stack.base, "GET", "/v1/customers/c-1/journey")
        ready, _ = await _answer(stack.base, "GET", "/readyz")
        await asyncio.sleep(OUTAGE_S)
        redis.start()
        recovered = await _recovery(stack.base)
        assert (status, ready) == (503, 503)
        assert took < ANSWER_WITHIN_S
        return (f"Redis SIGKILLed, restarted after {OUTAGE_S:.0f} s (AOF): journey read "
                f"{status} in {took:.2f} s, /readyz {ready}; ready again {recovered:.1f} s "
                f"after the restart")  # fmt: skip

    async def broker_freeze() -> str:
        kafka.pause()
        frozen = time.monotonic()
        await asyncio.sleep(0.5)
        body = [{**_probe_event(), "event_id": f"probe-{time.monotonic_ns()}"}]
        status, took = await _answer(stack.base, "POST", "/v1/events", json=body)
        await asyncio.sleep(OUTAGE_S)
        kafka.resume()
        frozen_s = time.monotonic() - frozen
        recovered = await _recovery(stack.base)
        assert status == 503
        assert took < ANSWER_WITHIN_S
        return (f"broker frozen (SIGSTOP) {frozen_s:.1f} s: event intake {status} "
                f"in {took:.2f} s; ready again {recovered:.1f} s after it resumed")  # fmt: skip

    def sigkill(name: str) -> Callable[[], Coroutine[Any, Any, str]]:
        async def fault() -> str:
            stack.kill(name)
            await asyncio.sleep(1)
            stack.start(name)
            return f"`parcours {name}` SIGKILLed mid-stream and restarted"

        return fault

    async def receiver_refuses() -> str:
        seen = len(receiver.requests)
        await wait_until(lambda: len(receiver.requests) > seen, timeout_s=60)  # delivering
        before = len(receiver.requests)
        receiver.default = Behaviour(503)
        await asyncio.sleep(OUTAGE_S)
        receiver.default = OK
        refused = len(receiver.requests) - before
        assert refused > 0
        return (
            f"webhook receiver answered 503 to everything for {OUTAGE_S:.0f} s ({refused} refused)"
        )

    return [
        redis_restart, broker_freeze, sigkill("consume"), sigkill("train"),
        sigkill("dispatch"), receiver_refuses,
    ]  # fmt: skip


def _probe_event() -> dict[str, Any]:
    return {"customer_id": "c-probe", "type": "page_view", "channel": "web", "event_id": "p",
            "timestamp": "2026-11-01T00:00:00Z"}  # fmt: skip


async def _recovery(base: str) -> float:
    started = time.monotonic()
    await wait_until(lambda: _ready(base), timeout_s=60, interval_s=0.2)
    return time.monotonic() - started


async def _check_outcome(
    settings: Settings,
    kafka: EmbeddedKafka,
    redis: EmbeddedRedis,
    receiver: Receiver,
    sender: Sender,
) -> list[str]:
    kafka_settings = settings.kafka
    records = await read_until_quiet(
        kafka.bootstrap, kafka_settings.events_topic, kafka_settings.partitions
    )
    in_log = {_field(r.value, "event_id") for r in records}
    lost = sender.accepted - in_log
    assert not lost, f"{len(lost)} accepted events are not in the log, e.g. {sorted(lost)[:5]}"
    fold = build_fold(settings.journey)
    expected = expected_states(fold, records)
    client = connect_redis(redis.url, socket_timeout_s=5.0, max_connections=4)
    store = journey_store(client, settings.redis)
    customers = sorted(expected)

    async def folded() -> bool:
        stored = await stored_states(store, customers)
        return all(stored[c] == expected[c] for c in customers)

    try:
        await wait_until(folded, timeout_s=180, interval_s=1.0)
        triggers = await read_until_quiet(
            kafka.bootstrap, settings.triggers.topic, kafka_settings.partitions
        )
        trigger_ids = {_field(r.value, "id") for r in triggers}

        async def settled() -> bool:
            dead = await read_until_quiet(
                kafka.bootstrap, settings.webhooks.dead_letter_topic, kafka_settings.partitions
            )
            buried = {_field(_field_raw(r.value, "trigger"), "id") for r in dead}
            return trigger_ids <= receiver.delivered_triggers() | buried

        await wait_until(settled, timeout_s=180, interval_s=1.0)
    finally:
        await client.aclose()
    delivered = len(trigger_ids & receiver.delivered_triggers())
    return [
        f"{len(sender.accepted)} events accepted, all in the log ({len(records)} records "
        f"with client resends); {len(customers)} journeys equal to the pure fold",
        f"{len(trigger_ids)} triggers: {delivered} delivered, "
        f"{len(trigger_ids) - delivered} dead-lettered after the receiver's refusals",
    ]


def _field(raw: bytes | None, name: str) -> str:
    """One field of a JSON record ("" where the record is not a JSON object holding it)."""
    try:
        value = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        return ""
    return str(value.get(name, "")) if isinstance(value, dict) else ""


def _field_raw(raw: bytes | None, name: str) -> bytes:
    """A nested JSON object of a record, as JSON bytes."""
    value = orjson.loads(raw or b"{}")
    return orjson.dumps(value.get(name, {}))
