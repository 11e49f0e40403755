"""The Redis journey store: one string per customer, `<rev> <state JSON>`.

Writes are compare-and-set on `rev`, so a writer that lost its partitions in a rebalance (and
read a journey before the new owner changed it) cannot overwrite newer state. The state itself
carries the offset fence and event-id window, so the atomic write is also the fence.
A batch is read with one MGET and written with one script call: the cheapest shapes for
redis-py, whose per-command overhead otherwise dominates. Multi-key scripts need standalone
Redis (or Sentinel); Redis Cluster is not supported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from redis.asyncio import Connection, ConnectionPool, Redis
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

from models.state import JourneyState, decode_state
from service.errors import ConfigurationError, StoreUnavailable

_SAVE: Final = """
local ttl = ARGV[1]
local conflicts = {}
for i, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  local rev = current and string.match(current, '^(%d+) ') or '0'
  if rev == ARGV[2 * i] then
    local value = (tonumber(rev) + 1) .. ' ' .. ARGV[2 * i + 1]
    if ttl ~= '0' then
      redis.call('SET', key, value, 'PX', ttl)
    else
      redis.call('SET', key, value)
    end
  else
    conflicts[#conflicts + 1] = i - 1
  end
end
return conflicts
"""

REDIS_ERRORS: Final = (RedisConnectionError, RedisTimeoutError, OSError)


class Stored(NamedTuple):
    """A journey's encoded state as read (None if absent), with the revision a write must match."""

    state: bytes | None
    rev: int


class Write(NamedTuple):
    customer_id: str
    state: bytes
    expected_rev: int


def split_value(raw: bytes | str | None) -> tuple[int, bytes | None]:
    """`b"<rev> <json>"` into its revision and state bytes; a missing key is revision 0."""
    if raw is None:
        return 0, None
    rev, _, state = (raw.encode() if isinstance(raw, str) else raw).partition(b" ")
    return int(rev), state


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
        """Encoded states and revisions in one round trip, in the order asked."""
        if not customer_ids:
            return []
        try:
            values = await self._redis.mget([self.key(c) for c in customer_ids])
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"loading journeys: {exc}") from exc
        return [Stored(state, rev) for rev, state in map(split_value, values)]

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
            raw = await self._redis.get(self.key(customer_id))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading a journey: {exc}") from exc
        state = split_value(raw)[1]
        return decode_state(state) if state is not None else None


class HiredisPackingConnection(Connection):
    """redis-py's asyncio connection, packing commands with hiredis as its sync client does.

    The pure-Python packer costs microseconds per argument, which matters for a batch write
    of thousands of journeys in one call.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        return self._packer.pack(*args)  # type: ignore[no-any-return]


def connect_redis(url: str | None, *, socket_timeout_s: float, max_connections: int) -> Redis:
    """A pooled client; every command times out instead of hanging."""
    if not url:
        raise ConfigurationError(
            "PARCOURS_REDIS_URL is not set (use `parcours dev` for an embedded redis-server)"
        )
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": socket_timeout_s,
        "max_connections": max_connections,
    }
    if HIREDIS_AVAILABLE and url.startswith("redis://"):  # rediss:// and unix:// keep theirs
        options["connection_class"] = HiredisPackingConnection
    return Redis(connection_pool=ConnectionPool.from_url(url, **options))


def journey_store(redis: Redis, *, prefix: str, ttl_days: float) -> JourneyStore:
    return JourneyStore(redis, prefix=prefix, ttl_ms=int(ttl_days * 86_400_000))
