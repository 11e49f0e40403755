"""The Redis journey store: one string per customer, `<rev> <state JSON>`, and label books.

Writes are compare-and-set on `rev`, so a writer that lost its partitions in a rebalance (and
read a journey before the new owner changed it) cannot overwrite newer state. The state itself
carries the offset fence and event-id window, so the atomic write is also the fence.
A batch is read with one MGET and written with one script call: the cheapest shapes for
redis-py, whose per-command overhead otherwise dominates. On Redis Cluster, the same batch is
read with one MGET per slot and written with one script call per journey tag, concurrently
(see `service.keyspace`).

A journey lives at `<prefix>:{j<n>}:journey:<customer>`. Beside it, a customer's pending
predictions (`models.labels.LabelBook`) live under `<prefix>:{j<n>}:labels:<customer>` and
their earliest deadline in the sorted set `<prefix>:{j<n>}:due:<partition>` (one per tag and
partition); they are written by the same script call as the journey, so a label is recorded
or resolved exactly when the event that caused it is applied. Each partition's watermark
(newest event time applied) is a field of `<prefix>:watermarks`.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple, TypeAlias

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

from models.gauges import JourneyGauge
from models.state import JourneyState, decode_state
from service.errors import ConfigurationError, StoreUnavailable
from service.instrumented import InstrumentedRedis, InstrumentedRedisCluster
from service.keyspace import journey_shard, journey_tag
from service.metrics import DependencyMetrics
from service.resp import PackingConnection
from service.settings import RedisSettings

RedisClient: TypeAlias = Redis | RedisCluster
"""A standalone (or Sentinel-fronted) Redis, or a Redis Cluster: every store takes either."""

_PUT: Final = """
local ttl = ARGV[1]
local function put(key, value)
  if ttl ~= '0' then
    redis.call('SET', key, value, 'PX', ttl)
  else
    redis.call('SET', key, value)
  end
end
-- a journey key's revision ('0': no key), from its first bytes: the value is kilobytes
local function revision(key)
  return string.match(redis.call('GETRANGE', key, 0, 20), '^(%d+) ') or '0'
end
"""
"""Both save scripts: ARGV[1] is the TTL in ms ('0': none), `put` writes a key with it and
`revision` reads a journey key's revision."""

_CART_ENTRY: Final = """
local function cart_entry(base, member)
  -- the member's open cart as its tag's totals count it: the entry, its cents and risk
  local entry = redis.call('HGET', base .. 'cartv', member)
  if not entry then return nil end
  local c, r = string.match(entry, '^(%-?%d+) (%-?%d+)$')
  return entry, tonumber(c), tonumber(r)
end
"""
"""Read by the save scripts' gauge upkeep, the gauge reading and the erase script."""

_UNCOUNT_CART: Final = """
local function uncount_cart(base, member)
  -- take the member's open cart (if any) out of the tag's totals; returns its entry
  local before, cents, risk = cart_entry(base, member)
  if before then
    local totals = base .. 'totals'
    redis.call('HINCRBY', totals, 'carts', -1)
    redis.call('HINCRBY', totals, 'cents', 0 - cents)
    redis.call('HINCRBY', totals, 'risk', 0 - risk)
  end
  return before
end
"""
"""Used by the gauge reading and the erase script (the save scripts sum their writes'
changes first)."""

_GAUGES: Final = """
local function gauges(g, written)
  -- ARGV from g: per entry the write's index, customer, tag base, stage, stage left (''),
  -- cart value and value at risk (hundredths); applied only where the write went through.
  -- The carts' totals move once per tag and call, by the sum of its writes' changes.
  local expires = '+inf'
  if ttl ~= '0' then
    local t = redis.call('TIME')
    expires = string.format('%.0f', t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ttl))
  end
  local moved = {}  -- tag base -> {carts, cents, risk} to add to its totals
  local function move(base, carts, cents, risk)
    local m = moved[base]
    if not m then m = {0, 0, 0}; moved[base] = m end
    m[1], m[2], m[3] = m[1] + carts, m[2] + cents, m[3] + risk
  end
  for j = g, #ARGV, 7 do
    if written[tonumber(ARGV[j])] then
      local member, base, stage, left, cents, risk =
        ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4], ARGV[j + 5], ARGV[j + 6]
      if left ~= '' then
        redis.call('ZREM', base .. 'in:' .. left, member)
      end
      redis.call('ZADD', base .. 'in:' .. stage, expires, member)
      local values = base .. 'cartv'
      local before, was_cents, was_risk = cart_entry(base, member)
      if before then move(base, -1, 0 - was_cents, 0 - was_risk) end
      if cents ~= '0' then
        redis.call('HSET', values, member, cents .. ' ' .. risk)
        redis.call('ZADD', base .. 'carts', expires, member)
        move(base, 1, tonumber(cents), tonumber(risk))
      elseif before then
        redis.call('HDEL', values, member)
        redis.call('ZREM', base .. 'carts', member)
      end
    end
  end
  for base, m in pairs(moved) do
    local totals = base .. 'totals'
    for k, field in ipairs({'carts', 'cents', 'risk'}) do
      if m[k] ~= 0 then  -- (nothing to add; a negated zero would print as -0)
        redis.call('HINCRBY', totals, field, string.format('%.0f', m[k]))
      end
    end
  end
end
"""
"""The journey gauges' upkeep, shared by both save scripts (see `GAUGES_READ`)."""

GAUGES_READ: Final = (
    _CART_ENTRY
    + _UNCOUNT_CART
    + """
-- KEYS[1]: the tag's totals hash (base .. 'totals'); ARGV[1]: the tag's gauge base, then the
-- map's stages.
-- Drops what expired with its journey, then counts: customers per stage, carts, value, risk.
local t = redis.call('TIME')
local now = string.format('%.0f', t[1] * 1000 + math.floor(t[2] / 1000))
local base = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local key = base .. 'in:' .. ARGV[i]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  out[#out + 1] = redis.call('ZCARD', key)
end
local carts, values = base .. 'carts', base .. 'cartv'
for _, member in ipairs(redis.call('ZRANGEBYSCORE', carts, '-inf', now)) do
  if uncount_cart(base, member) then redis.call('HDEL', values, member) end
  redis.call('ZREM', carts, member)
end
for _, v in ipairs(redis.call('HMGET', KEYS[1], 'carts', 'cents', 'risk')) do
  out[#out + 1] = tonumber(v or '0')
end
return out
"""
)

_SAVE: Final = (
    _PUT
    + _CART_ENTRY
    + _GAUGES
    + """
local conflicts, written = {}, {}
for i, key in ipairs(KEYS) do
  local rev = revision(key)
  if rev == ARGV[2 * i] then
    put(key, (tonumber(rev) + 1) .. ' ' .. ARGV[2 * i + 1])
    written[i - 1] = true
  else
    conflicts[#conflicts + 1] = i - 1
  end
end
gauges(2 + 2 * #KEYS, written)
return conflicts
"""
)

_SAVE_WITH_LABELS: Final = (
    _PUT
    + _CART_ENTRY
    + _GAUGES
    + """
local conflicts, written = {}, {}
local n = (#KEYS) / 3
for i = 1, n do
  local key, book_key, due_key = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local expected, state, book, due, member =
    ARGV[5 * i - 3], ARGV[5 * i - 2], ARGV[5 * i - 1], ARGV[5 * i], ARGV[5 * i + 1]
  local rev = revision(key)
  if rev ~= expected then
    conflicts[#conflicts + 1] = i - 1
  else
    written[i - 1] = true
    if state == '' and rev ~= '0' then
      state = string.sub(redis.call('GET', key), #rev + 2)
    end
    if state ~= '' then
      put(key, (tonumber(rev) + 1) .. ' ' .. state)
    end
    if book == '' then
      redis.call('DEL', book_key)
    elseif book ~= '-' then
      put(book_key, book)
    end
    if due == '' then
      redis.call('ZREM', due_key, member)
    elseif due ~= '-' then
      redis.call('ZADD', due_key, due, member)
    end
  end
end
gauges(2 + 5 * n, written)
return conflicts
"""
)

ERASED: Final = b"erased"
"""What an erased customer's journey key holds (after its revision) until the hold ends."""

_ERASE: Final = (
    _CART_ENTRY
    + _UNCOUNT_CART
    + """
-- KEYS: journey, label book; ARGV: gauge base, member, hold ms, #stages, the marker, the
-- stages, then the due keys.
local current = redis.call('GET', KEYS[1])
local rev = current and string.match(current, '^(%d+) ') or '0'
local held = current ~= nil and current ~= false and string.sub(current, #rev + 2) == ARGV[5]
redis.call('SET', KEYS[1], (tonumber(rev) + 1) .. ' ' .. ARGV[5], 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
local base, member, n = ARGV[1], ARGV[2], tonumber(ARGV[4])
for i = 6, 5 + n do redis.call('ZREM', base .. 'in:' .. ARGV[i], member) end
if uncount_cart(base, member) then redis.call('HDEL', base .. 'cartv', member) end
redis.call('ZREM', base .. 'carts', member)
for i = 6 + n, #ARGV do redis.call('ZREM', ARGV[i], member) end
if current and not held then return 1 end
return 0
"""
)
"""Erase one customer in their journey tag: the journey becomes an `erased` marker that
expires after the hold, and the label book, deadline entries and gauge entries go."""

_ADVANCE: Final = """
local out = {}
for i = 1, #ARGV, 2 do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  local proposed = tonumber(ARGV[i + 1])
  if proposed > current then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    current = proposed
  end
  out[#out + 1] = tostring(current)
end
return out
"""

REDIS_ERRORS: Final = (RedisConnectionError, RedisTimeoutError, OSError)


class Stored(NamedTuple):
    """A journey's encoded state as read (None if absent), with the revision a write must match."""

    state: bytes | None
    rev: int
    labels: bytes | None = None
    erased: bool = False
    """the customer was erased and is held: their events must not recreate a journey"""


class LabelWrite(NamedTuple):
    """A customer's label book after a write: `book` None deletes it, `due` None unindexes it."""

    book: bytes | None
    due: int | None
    partition: int


class Write(NamedTuple):
    """A journey to write if its revision is still `expected_rev`; state None keeps it as is."""

    customer_id: str
    state: bytes | None
    expected_rev: int
    labels: LabelWrite | None = None
    gauge: JourneyGauge | None = None


class JourneyGauges(NamedTuple):
    """Live journeys counted over every tag (amounts in the shop's currency unit)."""

    customers: dict[str, int]
    open_carts: int
    cart_value: float
    value_at_risk: float


def split_value(raw: bytes | str | None) -> tuple[int, bytes | None]:
    """`b"<rev> <json>"` into its revision and state bytes; a missing key is revision 0 and an
    erased one has no state."""
    if raw is None:
        return 0, None
    rev, _, state = (raw.encode() if isinstance(raw, str) else raw).partition(b" ")
    return int(rev), None if state == ERASED else state


class JourneyStore:
    """Loads and saves journey states; Redis failures surface as `StoreUnavailable`."""

    def __init__(self, redis: RedisClient, *, prefix: str, ttl_ms: int, shards: int) -> None:
        self.redis = redis
        self._redis = redis
        self._prefix = prefix
        self._ttl_ms = ttl_ms
        self._shards = shards
        self._cluster = isinstance(redis, RedisCluster)
        self._save = redis.register_script(_SAVE)
        self._save_with_labels = redis.register_script(_SAVE_WITH_LABELS)
        self._advance = redis.register_script(_ADVANCE)
        self._read_gauges = redis.register_script(GAUGES_READ)
        self._erase = redis.register_script(_ERASE)

    def _tag_base(self, shard: int) -> str:
        """`<prefix>:{j<shard>}:`, which every key of that journey tag starts with."""
        return f"{self._prefix}:{journey_tag(shard)}:"

    def _base(self, customer_id: str) -> str:
        return self._tag_base(journey_shard(customer_id, self._shards))

    def key(self, customer_id: str) -> str:
        return f"{self._base(customer_id)}journey:{customer_id}"

    def labels_key(self, customer_id: str) -> str:
        return f"{self._base(customer_id)}labels:{customer_id}"

    def due_key(self, customer_id: str, partition: int) -> str:
        """The deadline index, of those for `partition`, that holds this customer's entry."""
        return self._due_key(journey_shard(customer_id, self._shards), partition)

    def _due_key(self, shard: int, partition: int) -> str:
        return f"{self._tag_base(shard)}due:{partition}"

    @property
    def watermarks_key(self) -> str:
        return f"{self._prefix}:watermarks"

    async def load_many(
        self, customer_ids: Sequence[str], *, with_labels: bool = False
    ) -> list[Stored]:
        """Encoded states, revisions (and label books) in one round trip, in the order asked."""
        if not customer_ids:
            return []
        keys = [self.key(c) for c in customer_ids]
        if with_labels:
            keys += [self.labels_key(c) for c in customer_ids]
        try:
            if isinstance(self._redis, RedisCluster):
                values = await self._redis.mget_nonatomic(keys)
            else:
                values = await self._redis.mget(keys)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"loading journeys: {exc}") from exc
        n = len(customer_ids)
        books: list[Any] = values[n:] if with_labels else [None] * n
        return [
            Stored(state, rev, book, raw is not None and state is None)
            for raw, (rev, state), book in zip(
                values[:n], map(split_value, values[:n]), books, strict=True
            )
        ]

    async def save_many(self, writes: Sequence[Write]) -> list[int]:
        """Write every state whose revision still matches; returns indexes that did not.

        One script call on standalone Redis; on a cluster, one per journey tag, concurrently.
        """
        if not writes:
            return []
        if not self._cluster:
            return await self._save_group(writes)
        groups: dict[int, list[int]] = {}
        for i, w in enumerate(writes):
            groups.setdefault(journey_shard(w.customer_id, self._shards), []).append(i)
        indexes = list(groups.values())
        replies = await asyncio.gather(
            *(self._save_group([writes[i] for i in group]) for group in indexes)
        )
        return sorted(
            group[i] for group, reply in zip(indexes, replies, strict=True) for i in reply
        )

    async def _save_group(self, writes: Sequence[Write]) -> list[int]:
        if any(w.labels is not None or w.state is None for w in writes):
            return await self._save_labelled(writes)
        bases = [self._base(w.customer_id) for w in writes]
        keys = [f"{base}journey:{w.customer_id}" for base, w in zip(bases, writes, strict=True)]
        args: list[bytes | int | str] = [self._ttl_ms]
        for w in writes:
            args += [w.expected_rev, w.state or b""]
        self._gauge_args(writes, bases, args)
        try:
            conflicts = await self._save(keys=keys, args=args)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"saving journeys: {exc}") from exc
        return [int(i) for i in conflicts]

    async def _save_labelled(self, writes: Sequence[Write]) -> list[int]:
        bases = [self._base(w.customer_id) for w in writes]
        keys: list[str] = []
        args: list[bytes | int | str] = [self._ttl_ms]
        for base, w in zip(bases, writes, strict=True):
            labels = w.labels
            partition = labels.partition if labels is not None else 0
            c = w.customer_id
            keys += [f"{base}journey:{c}", f"{base}labels:{c}", f"{base}due:{partition}"]
            book: bytes | str = "-"
            due: int | str = "-"
            if labels is not None:
                book = labels.book or ""
                due = "" if labels.due is None else labels.due
            args += [w.expected_rev, w.state or b"", book, due, w.customer_id]
        self._gauge_args(writes, bases, args)
        try:
            conflicts = await self._save_with_labels(keys=keys, args=args)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"saving journeys: {exc}") from exc
        return [int(i) for i in conflicts]

    @staticmethod
    def _gauge_args(
        writes: Sequence[Write], bases: Sequence[str], args: list[bytes | int | str]
    ) -> None:
        for i, (base, w) in enumerate(zip(bases, writes, strict=True)):
            if (g := w.gauge) is not None:
                args += [i, w.customer_id, f"{base}g:", g.stage, g.left_stage or ""]
                args += [g.cart_cents, g.at_risk_cents]

    async def gauges(self, stages: Sequence[str]) -> JourneyGauges:
        """Customers per stage and open carts over every tag, dropping what expired first."""
        try:
            try:
                replies = await self._read_gauge_tags(stages)
            except NoScriptError:  # not loaded yet, or a restarted server: load, once more
                script = self._read_gauges
                script.sha = await self._redis.script_load(script.script)
                replies = await self._read_gauge_tags(stages)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading the journey gauges: {exc}") from exc
        n = len(stages)
        totals = [sum(int(reply[i]) for reply in replies) for i in range(n + 3)]
        return JourneyGauges(dict(zip(stages, totals[:n], strict=True)), totals[n],
                             totals[n + 1] / 100, totals[n + 2] / 100)  # fmt: skip

    async def _read_gauge_tags(self, stages: Sequence[str]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard in range(self._shards):
                base = f"{self._tag_base(shard)}g:"
                pipe.evalsha(self._read_gauges.sha, 1, base + "totals", base, *stages)
            return list(await pipe.execute())

    async def advance_watermarks(self, proposed: dict[int, int]) -> dict[int, int]:
        """Raise each partition's watermark to at least `proposed`; returns the resulting ones."""
        if not proposed:
            return {}
        args: list[int] = []
        for partition, at in proposed.items():
            args += [partition, at]
        try:
            result = await self._advance(keys=[self.watermarks_key], args=args)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"advancing watermarks: {exc}") from exc
        return {p: int(v) for p, v in zip(proposed, result, strict=True)}

    async def watermarks(self, partitions: Iterable[int]) -> dict[int, int]:
        """The newest event time applied on each of `partitions` that has one, in one call."""
        wanted = list(partitions)
        if not wanted:
            return {}
        try:
            raw = await self._redis.hmget(self.watermarks_key, [str(p) for p in wanted])
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading watermarks: {exc}") from exc
        return {p: int(v) for p, v in zip(wanted, raw, strict=True) if v is not None}

    async def due(self, partition: int, before_ms: int, limit: int) -> list[str]:
        """Customers on `partition` with a label deadline before `before_ms`, earliest first.

        Reads each journey tag's index for the partition (one pipelined round trip) and keeps
        the earliest `limit` of their union.
        """
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for shard in range(self._shards):
                    pipe.zrangebyscore(
                        self._due_key(shard, partition), "-inf", f"({before_ms}",
                        start=0, num=limit, withscores=True,
                    )  # fmt: skip
                replies = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading label deadlines: {exc}") from exc
        pairs = [pair for reply in replies for pair in reply]
        earliest = pairs if self._shards == 1 else heapq.nsmallest(limit, pairs, key=_score)
        return [m.decode() if isinstance(m, bytes) else str(m) for m, _ in earliest]

    async def erase(
        self, customer_id: str, *, stages: Sequence[str], partitions: int, hold_ms: int
    ) -> bool:
        """Erase the journey, label book, deadlines and gauge entries of one customer, and hold
        the erasure for `hold_ms` (their events are then dropped); True if a journey existed."""
        base = self._base(customer_id)
        args: list[str | int | bytes] = [f"{base}g:", customer_id, hold_ms, len(stages), ERASED]
        args += stages
        args += [self.due_key(customer_id, p) for p in range(partitions)]
        keys = [self.key(customer_id), self.labels_key(customer_id)]
        try:
            existed = await self._erase(keys=keys, args=args)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"erasing a journey: {exc}") from exc
        return bool(existed)

    async def erased(self, customer_id: str) -> bool:
        """Whether the customer's erasure is still held."""
        try:
            raw = await self._redis.get(self.key(customer_id))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading a journey: {exc}") from exc
        return raw is not None and split_value(raw)[1] is None

    async def get(self, customer_id: str) -> JourneyState | None:
        """One customer's journey, or None if Parcours has never seen them."""
        try:
            raw = await self._redis.get(self.key(customer_id))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading a journey: {exc}") from exc
        state = split_value(raw)[1]
        return decode_state(state) if state is not None else None


def connect_redis(
    url: str | None,
    *,
    socket_timeout_s: float,
    max_connections: int,
    cluster: bool = False,
    metrics: DependencyMetrics | None = None,
) -> RedisClient:
    """A pooled client (a cluster client if `cluster`); every command times out, none hangs.
    With `metrics`, every command is timed and its errors counted."""
    if not url:
        raise ConfigurationError(
            "PARCOURS_REDIS_URL is not set (use `parcours dev` for an embedded redis-server)"
        )
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": socket_timeout_s,
        "max_connections": max_connections,
    }
    if cluster:
        if metrics is not None:
            return InstrumentedRedisCluster.from_url(url, metrics=metrics, **options)
        return RedisCluster.from_url(url, **options)
    if url.startswith("redis://"):  # rediss:// and unix:// keep their connection classes
        options["connection_class"] = PackingConnection
    pool = ConnectionPool.from_url(url, **options)
    if metrics is not None:
        return InstrumentedRedis(connection_pool=pool, metrics=metrics)
    return Redis(connection_pool=pool)


def redis_from_settings(
    settings: RedisSettings,
    *,
    max_connections: int | None = None,
    metrics: DependencyMetrics | None = None,
) -> RedisClient:
    """`connect_redis` with the settings' URL, timeout, pool size and mode."""
    return connect_redis(
        settings.url,
        socket_timeout_s=settings.socket_timeout_s,
        max_connections=max_connections or settings.max_connections,
        cluster=settings.cluster,
        metrics=metrics,
    )


async def learn_topology(redis: RedisClient) -> None:
    """Have a cluster client learn the slot map now, before any concurrent command.

    redis-py's cluster client learns it on first use, and commands that start concurrently on
    a fresh client can find their connection closed under them. No-op for standalone Redis;
    raises `StoreUnavailable` if no node answers.
    """
    if isinstance(redis, RedisCluster):
        try:
            await redis.initialize()
        except (*REDIS_ERRORS, RedisClusterException) as exc:
            raise StoreUnavailable(f"learning the Redis Cluster's slots: {exc}") from exc


def journey_store(redis: RedisClient, settings: RedisSettings) -> JourneyStore:
    return JourneyStore(
        redis,
        prefix=settings.key_prefix,
        ttl_ms=int(settings.journey_ttl_days * 86_400_000),
        shards=settings.journey_shards,
    )


def _score(pair: tuple[bytes, float]) -> float:
    return pair[1]
