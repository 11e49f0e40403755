"""Webhook subscriptions in Redis: one JSON string per subscription, an index set, a version.

The version counter is bumped on every change, so a dispatcher can cache the whole list and
reload it only when the version moved.
"""

from __future__ import annotations

import builtins
from typing import Any

import orjson
from redis.asyncio import Redis

from models.triggers import TRIGGER_TYPES
from models.webhooks import Filter, Subscription
from service.errors import StoreUnavailable
from service.store import REDIS_ERRORS


class SubscriptionStore:
    """CRUD over subscriptions; Redis failures surface as `StoreUnavailable`."""

    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self._redis = redis
        self._key = f"{prefix}:webhooks:sub:"
        self._index = f"{prefix}:webhooks:subs"
        self._version = f"{prefix}:webhooks:subs:version"

    async def create(self, sub: Subscription) -> None:
        await self._write(sub)

    async def get(self, sub_id: str) -> Subscription | None:
        try:
            raw = await self._redis.get(self._key + sub_id)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading a subscription: {exc}") from exc
        return _decode(raw) if raw is not None else None

    async def list(self) -> builtins.list[Subscription]:
        try:
            members: set[bytes] = await self._redis.smembers(self._index)  # type: ignore[assignment]
            keys = [self._key + member.decode() for member in sorted(members)]
            raws = await self._redis.mget(keys) if keys else []
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"listing subscriptions: {exc}") from exc
        return [_decode(raw) for raw in raws if raw is not None]

    async def update(self, sub: Subscription) -> bool:
        if await self.get(sub.id) is None:
            return False
        await self._write(sub)
        return True

    async def delete(self, sub_id: str) -> bool:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._key + sub_id)
                pipe.srem(self._index, sub_id)
                pipe.incr(self._version)
                deleted, _, _ = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"deleting a subscription: {exc}") from exc
        return bool(deleted)

    async def version(self) -> int:
        try:
            return int(await self._redis.get(self._version) or 0)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading the subscriptions version: {exc}") from exc

    async def _write(self, sub: Subscription) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._key + sub.id, _encode(sub))
                pipe.sadd(self._index, sub.id)
                pipe.incr(self._version)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"writing a subscription: {exc}") from exc


def _encode(sub: Subscription) -> bytes:
    stages = sorted(sub.filter.stages) if sub.filter.stages is not None else None
    return orjson.dumps(
        {
            "id": sub.id,
            "url": sub.url,
            "triggers": sorted(sub.triggers),
            "secret": sub.secret,
            "enabled": sub.enabled,
            "filter": {"min_cart_value": sub.filter.min_cart_value, "stages": stages},
            "created_at": sub.created_at,
        }
    )


def _decode(raw: bytes | str) -> Subscription:
    data: dict[str, Any] = orjson.loads(raw)
    found = data.get("filter") or {}
    stages = found.get("stages")
    return Subscription(
        id=data["id"],
        url=data["url"],
        triggers=frozenset(t for t in data["triggers"] if t in TRIGGER_TYPES),
        secret=data["secret"],
        enabled=bool(data.get("enabled", True)),
        filter=Filter(found.get("min_cart_value"), frozenset(stages) if stages else None),
        created_at=int(data.get("created_at", 0)),
    )
