"""Webhook subscriptions in Redis: what the API manages and the dispatcher delivers to.

Keys, under `<prefix>:{webhooks}:`:

- `sub:<id>`: the subscription as one JSON string, secret included (the dispatcher signs
  with it, so it cannot be hashed).
- `index`: sorted set id -> created_at (epoch ms); equal scores order by id, so a listing is
  ordered by creation time, then id.
- `version`: a counter bumped by every create, update and delete.

Each change is one script call, so the three keys move together. Readers cache `list()` and
reload when `version()` moves; reading the version first means a change that lands between
the two reads only causes one more reload, never a missed one.
"""

from __future__ import annotations

import builtins
from typing import Final

import orjson

from models.errors import ParcoursError
from models.webhooks import Filter, Subscription
from service.errors import StoreUnavailable
from service.keyspace import WEBHOOKS_TAG
from service.store import REDIS_ERRORS, RedisClient

_WRITE: Final = """
if redis.call('EXISTS', KEYS[1]) ~= tonumber(ARGV[4]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('INCR', KEYS[3])
return 1
"""
"""KEYS: sub, index, version; ARGV: JSON, created_at, id, 1 to replace an existing one or 0
to create a new one. 0 if the subscription's existence is not as expected."""

_DELETE: Final = """
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('INCR', KEYS[3])
return 1
"""
"""KEYS: sub, index, version; ARGV: id. 0 if there was no such subscription."""

_LIST: Final = """
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local value = redis.call('GET', ARGV[1] .. id)
  if value then out[#out + 1] = value end
end
return out
"""
"""KEYS: index; ARGV: the `sub:` key prefix. One consistent snapshot, in index order."""

FORMAT: Final = 1
"""Version of the stored JSON shape; bump it (and read the old one) when the shape changes."""


class SubscriptionExists(ParcoursError):
    """`create` was given an id that is already taken."""


class SubscriptionStore:
    """Creates, reads, changes and deletes subscriptions; Redis failures are `StoreUnavailable`."""

    def __init__(self, redis: RedisClient, *, prefix: str) -> None:
        self._redis = redis
        self._keys = f"{prefix}:{WEBHOOKS_TAG}:"
        self._write_script = redis.register_script(_WRITE)
        self._delete = redis.register_script(_DELETE)
        self._list = redis.register_script(_LIST)

    def key(self, sub_id: str) -> str:
        return f"{self._keys}sub:{sub_id}"

    @property
    def index_key(self) -> str:
        return f"{self._keys}index"

    @property
    def version_key(self) -> str:
        return f"{self._keys}version"

    async def create(self, sub: Subscription) -> None:
        """Store a new subscription; raises `SubscriptionExists` if its id is taken."""
        if not await self._write(sub, existing=False, doing="creating"):
            raise SubscriptionExists(f"subscription {sub.id!r} already exists")

    async def get(self, sub_id: str) -> Subscription | None:
        try:
            raw = await self._redis.get(self.key(sub_id))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading a webhook subscription: {exc}") from exc
        return decode_subscription(raw) if raw is not None else None

    async def list(self) -> builtins.list[Subscription]:
        """Every subscription, ordered by `created_at`, then id."""
        try:
            values = await self._list(keys=[self.index_key], args=[self.key("")])
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"listing webhook subscriptions: {exc}") from exc
        return [decode_subscription(raw) for raw in values]

    async def update(self, sub: Subscription) -> bool:
        """Replace the subscription with `sub.id`; False if there is none."""
        return await self._write(sub, existing=True, doing="updating")

    async def delete(self, sub_id: str) -> bool:
        """Remove a subscription; False if there was none."""
        keys = [self.key(sub_id), self.index_key, self.version_key]
        try:
            done = await self._delete(keys=keys, args=[sub_id])
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"deleting a webhook subscription: {exc}") from exc
        return bool(done)

    async def version(self) -> int:
        """Moves on every change (0 before the first one): reload `list()` when it does."""
        try:
            raw = await self._redis.get(self.version_key)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading the webhook subscriptions version: {exc}") from exc
        return int(raw) if raw is not None else 0

    async def _write(self, sub: Subscription, *, existing: bool, doing: str) -> bool:
        keys = [self.key(sub.id), self.index_key, self.version_key]
        args: list[bytes | str | int] = [
            encode_subscription(sub),
            sub.created_at,
            sub.id,
            int(existing),
        ]
        try:
            done = await self._write_script(keys=keys, args=args)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"{doing} a webhook subscription: {exc}") from exc
        return bool(done)


def encode_subscription(sub: Subscription) -> bytes:
    """The stored JSON; sets are written sorted so equal subscriptions store equal bytes."""
    stages = sub.filter.stages
    return orjson.dumps(
        {
            "format": FORMAT,
            "id": sub.id,
            "url": sub.url,
            "triggers": sorted(sub.triggers),
            "secret": sub.secret,
            "enabled": sub.enabled,
            "filter": {
                "min_cart_value": sub.filter.min_cart_value,
                "stages": sorted(stages) if stages is not None else None,
            },
            "created_at": sub.created_at,
            "description": sub.description,
        }
    )


def decode_subscription(raw: bytes | str) -> Subscription:
    """A stored subscription. Trigger types are kept as stored: one this version does not know
    never matches, whereas dropping it could leave an empty set, which means every type."""
    data = orjson.loads(raw)
    stages = data["filter"]["stages"]
    return Subscription(
        id=data["id"],
        url=data["url"],
        triggers=frozenset(data["triggers"]),
        secret=data["secret"],
        enabled=data["enabled"],
        filter=Filter(
            min_cart_value=data["filter"]["min_cart_value"],
            stages=frozenset(stages) if stages is not None else None,
        ),
        created_at=data["created_at"],
        description=data.get("description"),
    )
