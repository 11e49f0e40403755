"""Webhook delivery records in Redis: the delivery log, parked deliveries, dead ones, breakers.

Keys under `<prefix>:{webhooks}:`
- `log:<sub>`: list of recent attempts, newest first, trimmed to the configured length.
- `parked` (sorted set: delivery id by due time) and `parked:data` (hash: delivery id to the
  `PendingDelivery` JSON): deliveries waiting for a retry or for a receiver to come back. A
  dispatcher claims due ones by moving their due time a lease ahead, so a dispatcher killed
  mid-attempt leaves them to be claimed again when the lease runs out.
- `dead:<sub>:<delivery>`: a dead-lettered delivery, kept (with a TTL) for redelivery.
- `breakers` (hash: subscription id to its breaker snapshot), written by dispatchers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import orjson

from models.delivery import AttemptRecord, PendingDelivery
from service.errors import StoreUnavailable
from service.keyspace import WEBHOOKS_TAG
from service.store import REDIS_ERRORS, RedisClient


class CustomerDeliveries(NamedTuple):
    parked: list[PendingDelivery]
    dead: list[tuple[str, PendingDelivery]]
    """(the key it is kept under, the delivery)"""


_CLAIM: Final = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local found = {}
for _, id in ipairs(ids) do
  local data = redis.call('HGET', KEYS[2], id)
  if data then
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    found[#found + 1] = data
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return found
"""
"""Claim up to ARGV[2] deliveries due by ARGV[1]: their due time moves to the lease end ARGV[3]."""


class DeliveryStore:
    """See the module docstring; Redis failures surface as `StoreUnavailable`."""

    def __init__(
        self, redis: RedisClient, *, prefix: str, log_length: int, dead_kept_s: float
    ) -> None:
        self._redis = redis
        self._base = f"{prefix}:{WEBHOOKS_TAG}:"
        self._parked = self._base + "parked"
        self._parked_data = self._base + "parked:data"
        self._log_length = log_length
        self._dead_kept_ms = int(dead_kept_s * 1000)
        self._claim = redis.register_script(_CLAIM)

    async def log(self, subscription_id: str, record: AttemptRecord) -> None:
        key = self._base + "log:" + subscription_id
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.lpush(key, record.to_json())
                pipe.ltrim(key, 0, self._log_length - 1)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"logging an attempt: {exc}") from exc

    async def delivered(self, delivered: Sequence[tuple[str, AttemptRecord]]) -> None:
        """Log the attempts that delivered these (subscription id, attempt) pairs and stop any
        parked copies, all in one round trip: the common case, batched by the dispatcher."""
        by_log: dict[str, list[bytes]] = {}
        for subscription_id, record in delivered:
            by_log.setdefault(self._base + "log:" + subscription_id, []).append(record.to_json())
        ids = [record.delivery_id for _, record in delivered]
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for key, lines in by_log.items():
                    pipe.lpush(key, *lines)
                    pipe.ltrim(key, 0, self._log_length - 1)
                if ids:
                    pipe.zrem(self._parked, *ids)
                    pipe.hdel(self._parked_data, *ids)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"recording deliveries: {exc}") from exc

    async def recent(self, subscription_id: str, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` attempts, newest first."""
        key = self._base + "log:" + subscription_id
        try:
            raws = await self._redis.lrange(key, 0, limit - 1)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading the delivery log: {exc}") from exc
        return [AttemptRecord.decode(raw) for raw in raws]

    async def park(self, delivery: PendingDelivery, due: float) -> None:
        """Keep `delivery` until `due` (Unix time); parking it again replaces it."""
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(self._parked_data, delivery.delivery_id, delivery.to_json())
                pipe.zadd(self._parked, {delivery.delivery_id: due})
                await pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"parking a delivery: {exc}") from exc

    async def unpark(self, delivery_id: str) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self._parked, delivery_id)
                pipe.hdel(self._parked_data, delivery_id)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"unparking a delivery: {exc}") from exc

    async def claim_due(self, now: float, limit: int, lease_s: float) -> list[PendingDelivery]:
        """Parked deliveries due by `now`, each hidden from other claims for `lease_s`."""
        try:
            raws = await self._claim(
                keys=[self._parked, self._parked_data], args=[now, limit, now + lease_s]
            )
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"claiming parked deliveries: {exc}") from exc
        return [PendingDelivery.from_json(raw) for raw in raws]

    async def parked_count(self) -> int:
        try:
            return int(await self._redis.zcard(self._parked))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"counting parked deliveries: {exc}") from exc

    async def bury(self, delivery: PendingDelivery) -> None:
        """Keep a dead-lettered delivery for redelivery, and stop any parked copy."""
        key = self._dead_key(delivery.subscription_id, delivery.delivery_id)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(key, delivery.to_json(), px=self._dead_kept_ms)
                pipe.zrem(self._parked, delivery.delivery_id)
                pipe.hdel(self._parked_data, delivery.delivery_id)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"keeping a dead delivery: {exc}") from exc

    async def dead(self, subscription_id: str, delivery_id: str) -> PendingDelivery | None:
        try:
            raw = await self._redis.get(self._dead_key(subscription_id, delivery_id))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading a dead delivery: {exc}") from exc
        return PendingDelivery.from_json(raw) if raw is not None else None

    async def resurrect(self, delivery: PendingDelivery) -> None:
        """A dead delivery was delivered after all: forget it."""
        key = self._dead_key(delivery.subscription_id, delivery.delivery_id)
        await self._run("forgetting a dead delivery", self._redis.delete(key))

    async def save_breaker(self, subscription_id: str, snapshot: dict[str, Any]) -> None:
        write = self._redis.hset(self._base + "breakers", subscription_id, orjson.dumps(snapshot))
        await self._run("saving a breaker", write)

    async def breaker(self, subscription_id: str) -> dict[str, Any]:
        """The breaker as a dispatcher last saw it; closed if none recorded one."""
        try:
            raw = await self._redis.hget(self._base + "breakers", subscription_id)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading a breaker: {exc}") from exc
        if raw is None:
            return {"state": "closed", "consecutive_failures": 0, "retry_at": None}
        found: dict[str, Any] = orjson.loads(raw)
        return found

    async def forget_breaker(self, subscription_id: str) -> None:
        forget = self._redis.hdel(self._base + "breakers", subscription_id)
        await self._run("forgetting a breaker", forget)

    async def of_customer(self, customer_id: str) -> CustomerDeliveries:
        """Deliveries held about one customer: parked ones and dead ones (with their trigger,
        payload included). The attempt log names triggers, not customers."""
        try:
            parked_raw = await self._redis.hgetall(self._parked_data)
            dead_keys = [k async for k in self._redis.scan_iter(match=f"{self._base}dead:*")]
            dead_raw = await self._redis.mget(dead_keys) if dead_keys else []
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading a customer's deliveries: {exc}") from exc
        parked = [PendingDelivery.from_json(raw) for raw in parked_raw.values()]
        dead = [
            (key, PendingDelivery.from_json(raw))
            for key, raw in zip(dead_keys, dead_raw, strict=True)
            if raw is not None
        ]
        return CustomerDeliveries(
            parked=[d for d in parked if d.trigger.customer_id == customer_id],
            dead=[(k, d) for k, d in dead if d.trigger.customer_id == customer_id],
        )

    async def erase_customer(self, customer_id: str) -> int:
        """Drop the customer's parked and dead deliveries and their triggers' attempt-log
        lines; returns how many deliveries went."""
        held = await self.of_customer(customer_id)
        triggers = {d.trigger.id for d in held.parked} | {d.trigger.id for _, d in held.dead}
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for delivery in held.parked:
                    pipe.zrem(self._parked, delivery.delivery_id)
                    pipe.hdel(self._parked_data, delivery.delivery_id)
                for key, _ in held.dead:
                    pipe.delete(key)
                await pipe.execute()
            if triggers:
                await self._forget_attempts(triggers)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"erasing a customer's deliveries: {exc}") from exc
        return len(held.parked) + len(held.dead)

    async def _forget_attempts(self, triggers: set[str]) -> None:
        async for log in self._redis.scan_iter(match=f"{self._base}log:*"):
            for line in await self._redis.lrange(log, 0, -1):
                if AttemptRecord.decode(line).get("trigger_id") in triggers:
                    text = line.decode() if isinstance(line, bytes) else line
                    await self._redis.lrem(log, 0, text)

    def _dead_key(self, subscription_id: str, delivery_id: str) -> str:
        return f"{self._base}dead:{subscription_id}:{delivery_id}"

    async def _run(self, what: str, operation: Any) -> None:
        try:
            await operation
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"{what}: {exc}") from exc
