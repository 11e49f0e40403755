"""The Redis journey store: one hash per customer holding the state and its revision.

Writes are compare-and-set on `rev`, so a writer that lost its partitions in a rebalance (and
read a journey before the new owner changed it) cannot overwrite newer state. The state itself
carries the offset fence and event-id window, so the atomic hash write is also the fence.
Multi-key scripts need standalone Redis (or Sentinel); Redis Cluster is not supported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, NamedTuple

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from models.state import JourneyState, decode_state
from service.errors import ConfigurationError, StoreUnavailable

_SAVE: Final = """
local ttl = tonumber(ARGV[1])
local conflicts = {}
for i, key in ipairs(KEYS) do
  local expected = ARGV[2 * i]
  local current = redis.call('HGET', key, 'rev') or '0'
  if current == expected then
    redis.call('HSET', key, 'state', ARGV[2 * i + 1], 'rev', tostring(tonumber(expected) + 1))
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
  else
    conflicts[#conflicts + 1] = i - 1
  end
end
return conflicts
"""

REDIS_ERRORS: Final = (RedisConnectionError, RedisTimeoutError, OSError)


class Stored(NamedTuple):
    """A journey as read, with the revision a write must match."""

    state: JourneyState | None
    rev: int


class Write(NamedTuple):
    customer_id: str
    state: bytes
    expected_rev: int


class JourneyStore:
    """Loads and saves journey states; Redis failures surface as `StoreUnavailable`."""

    def __init__(self, redis: Redis, *, prefix: str, ttl_ms: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl_ms = ttl_ms
        self._save = redis.register_script(_SAVE)

    def key(self, customer_id: str) -> str:
        return f"{self._prefix}:journey:{customer_id}"

    async def load_many(self, customer_ids: Sequence[str]) -> list[Stored]:
        """States and revisions in one round trip, in the order asked."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for customer_id in customer_ids:
                    pipe.hmget(self.key(customer_id), "state", "rev")
                rows = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"loading journeys: {exc}") from exc
        return [
            Stored(decode_state(raw), int(rev)) if raw is not None else Stored(None, 0)
            for raw, rev in rows
        ]

    async def save_many(self, writes: Sequence[Write]) -> list[int]:
        """Write every state whose revision still matches; returns indexes that did not."""
        if not writes:
            return []
        keys = [self.key(w.customer_id) for w in writes]
        args: list[bytes | int] = [self._ttl_ms]
        for w in writes:
            args += [w.expected_rev, w.state]
        try:
            conflicts = await self._save(keys=keys, args=args)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"saving journeys: {exc}") from exc
        return [int(i) for i in conflicts]

    async def get(self, customer_id: str) -> JourneyState | None:
        """One customer's journey, or None if Parcours has never seen them."""
        try:
            raw = await self._redis.hget(self.key(customer_id), "state")
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading a journey: {exc}") from exc
        return decode_state(raw) if raw is not None else None


def connect_redis(url: str | None, *, socket_timeout_s: float, max_connections: int) -> Redis:
    """A pooled client; every command times out instead of hanging."""
    if not url:
        raise ConfigurationError(
            "PARCOURS_REDIS_URL is not set (use `parcours dev` for an embedded redis-server)"
        )
    return Redis.from_url(
        url,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        max_connections=max_connections,
        retry_on_timeout=False,
    )


def journey_store(redis: Redis, *, prefix: str, ttl_days: float) -> JourneyStore:
    return JourneyStore(redis, prefix=prefix, ttl_ms=int(ttl_days * 86_400_000))
