"""The journey analytics in Redis: facts recorded exactly once, counters read per time range.

Every key starts with `<prefix>:{analytics}:` (the hash tag keeps them in one Redis Cluster
slot, so each script call touches one slot). Under it:

- `c:<map>:<h|d>:<bucket start ms>:<segment>`: hash of counters (`models.analytics` fields);
- `t:<map>:<h|d>:<bucket>:<segment>`: hash of touchpoint counts before an exit (`x|`), an
  abandoned cart (`a|`), moving on (`p|`) or moving back (`k|`), at most `max_touchpoints`
  targets per hash (later ones pooled under `<type>|<channel>|*`);
- `u:<map>:<h|d>:<bucket>:<segment>:<stage>`: HyperLogLog of the customers entering a stage;
- `keys:<map>:<h|d>:<bucket>`: set of the bucket's keys, and `expiry`: sorted set of buckets
  by the event time at which their retention ends (the script then deletes them);
- `fence` (partition -> last offset recorded), `clock` (partition -> newest event time);
- `pending` (customer -> exit and cart deadlines and the leaving record) and, per partition,
  `exits:<p>` and `carts:<p>`: customers by deadline, for the watermark to resolve.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import orjson

from models.analytics import DAY_MS, HOUR_MS, Bucket, Fact, Leaving
from service.analytics_scripts import READ, RECORD
from service.errors import StoreUnavailable
from service.keyspace import ANALYTICS_TAG
from service.settings import Settings
from service.store import REDIS_ERRORS, RedisClient

GRANULARITY: Final = {"hour": "h", "day": "d"}
PRUNE_BATCH: Final = 100
"""Expired buckets deleted per call: deleting is spread over calls, not done in one stall."""


class CustomerFacts(NamedTuple):
    """One customer's facts of a batch, in log order."""

    customer_id: str
    facts: Sequence[Fact]


@dataclass(frozen=True, slots=True)
class Recorded:
    """What one call did: facts counted (not already fenced), outcomes resolved, buckets
    past their retention that counts were dropped from, and partitions with more deadlines
    due than one call resolves."""

    facts: int
    exits: int
    abandoned_carts: int
    dropped: int
    backlog: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Reading:
    """Counters of one map and segment over some buckets, with the partitions' clocks."""

    clocks: dict[int, int]
    totals: dict[str, int]
    series: list[dict[str, int]]
    touches: dict[str, int]
    customers: list[dict[str, int]]
    customers_over_range: dict[str, int]
    touch_series: list[dict[str, int]]


class AnalyticsStore:
    """Records facts with one fenced script call per batch and reads ranges with one more.

    Takes a client that returns bytes (`service.store.connect_redis`), like `JourneyStore`.
    """

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str,
        hour_retention_ms: int,
        day_retention_ms: int,
        lateness_ms: int,
        abandon_after_ms: int,
        sweep_batch: int = 1000,
        max_touchpoints: int = 500,
    ) -> None:
        if min(hour_retention_ms, day_retention_ms, sweep_batch, max_touchpoints) <= 0:
            raise ValueError("retentions, sweep_batch and max_touchpoints must be positive")
        self._redis = redis
        self.base = base = f"{prefix}:{ANALYTICS_TAG}:"
        self._keys = [f"{base}{name}" for name in ("fence", "clock", "pending", "expiry")]
        self._settings: list[str | int] = [
            hour_retention_ms, day_retention_ms, lateness_ms, sweep_batch, max_touchpoints,
            PRUNE_BATCH, abandon_after_ms,
        ]  # fmt: skip
        self._record = redis.register_script(RECORD)
        self._read = redis.register_script(READ)

    async def record(
        self, journey_map: str, customers: Sequence[CustomerFacts], *, sweep: Iterable[int] = ()
    ) -> Recorded:
        """Count each fact above its partition's fence, once, and resolve what is now due.

        Partitions of counted facts are swept, and so are those in `sweep` (a backlog).
        Call it before writing the journeys of the same batch; raises `StoreUnavailable`.
        """
        leavings: list[str] = []
        batch = [
            [str(run[0].partition), customer, [_encode(fact, leavings) for fact in run]]
            for customer, facts in customers
            for run in _runs(facts)
        ]
        args: list[str | int | bytes] = [self.base, journey_map, *self._settings]
        args += [orjson.dumps([str(p) for p in sweep]), orjson.dumps(batch), *leavings]
        try:
            applied, exits, carts, dropped, backlog = await self._record(keys=self._keys, args=args)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"recording analytics: {exc}") from exc
        parts = tuple(sorted(int(p) for p in backlog))
        return Recorded(int(applied), int(exits), int(carts), int(dropped), parts)

    async def read(
        self,
        journey_map: str,
        bucket: Bucket,
        segment: str,
        starts: Sequence[int],
        *,
        stages: Sequence[str] = (),
        bucket_customers: bool = False,
        touches: bool = False,
        touch_series: bool = False,
        fields: Sequence[str] = (),
        series: Sequence[str] = (),
    ) -> Reading:
        """Counters summed over the buckets starting at `starts` (ascending), in one call.

        Totals and distinct customers over the range are read from day buckets where the
        range holds whole days (a thirtieth of the keys for a month by hour). `stages`: also
        count their distinct customers over the range, and per bucket if `bucket_customers`
        (a sketch read per bucket and stage: the costliest part of a long range); `touches`:
        also sum the touchpoint counts, or `touch_series`: return them per bucket instead;
        `fields`, `series`: fields, and field prefixes, kept per bucket.
        """
        touch_mode = "r" if touch_series else str(int(touches))
        cover = covering(bucket, starts)
        args: list[str | int] = [self.base, journey_map, GRANULARITY[bucket], segment]
        args += [len(starts), *starts, len(cover), *cover, len(stages), *stages]
        args += [int(bucket_customers), touch_mode]
        args += [len(fields), *fields, len(series), *series]
        try:
            reply = await self._read(keys=[self._keys[1]], args=args)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading analytics: {exc}") from exc
        totals, per_bucket, summed_touches, customers, over_range, clocks, touch_rows = reply
        return Reading(
            clocks={int(p): int(t) for p, t in _pairs(clocks).items()},
            totals=_pairs(totals),
            series=[_pairs(row) for row in per_bucket],
            touches=_pairs(summed_touches),
            customers=[dict(zip(stages, map(int, row), strict=True)) for row in customers],
            customers_over_range=dict(zip(stages, map(int, over_range), strict=True)),
            touch_series=[_pairs(row) for row in touch_rows],
        )

    async def clocks(self) -> dict[int, int]:
        """The newest event time recorded per partition."""
        try:
            raw = await self._redis.hgetall(self._keys[1])
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading analytics: {exc}") from exc
        return {int(p): int(t) for p, t in raw.items()}

    async def pending_of(self, customer_id: str) -> str | None:
        """The customer's unresolved outcome record (deadlines and their last touchpoints)."""
        try:
            raw = await self._redis.hget(self._keys[2], customer_id)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading analytics: {exc}") from exc
        return raw.decode() if isinstance(raw, bytes) else raw

    async def erase_customer(self, customer_id: str, partitions: int) -> bool:
        """Drop the customer's unresolved outcome record and its deadlines (on `partitions`):
        their exit or abandonment is then not counted. The counters and HyperLogLogs already
        counted hold no id that can be read back."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hdel(self._keys[2], customer_id)
                for p in range(partitions):
                    pipe.zrem(f"{self.base}exits:{p}", customer_id)
                    pipe.zrem(f"{self.base}carts:{p}", customer_id)
                replies = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"erasing analytics: {exc}") from exc
        return bool(replies[0])


def covering(bucket: Bucket, starts: Sequence[int]) -> list[str]:
    """The buckets (`h:<start>`, `d:<start>`) holding exactly the ascending `starts`: each
    whole UTC day among hourly starts as its day.

    >>> covering("hour", [DAY_MS - HOUR_MS, *range(DAY_MS, 2 * DAY_MS + HOUR_MS, HOUR_MS)])
    ['h:82800000', 'd:86400000', 'h:172800000']
    """
    if bucket == "day":
        return [f"d:{start}" for start in starts]
    cover: list[str] = []
    j, n = 0, len(starts)
    while j < n:
        start = starts[j]
        if start % DAY_MS == 0 and j + 24 <= n and starts[j + 23] == start + DAY_MS - HOUR_MS:
            cover.append(f"d:{start}")
            j += 24
        else:
            cover.append(f"h:{start}")
            j += 1
    return cover


def _runs(facts: Sequence[Fact]) -> list[list[Fact]]:
    """Consecutive facts of one partition (a customer's events normally share one)."""
    runs: list[list[Fact]] = []
    for fact in facts:
        if runs and runs[-1][0].partition == fact.partition:
            runs[-1].append(fact)
        else:
            runs.append([fact])
    return runs


def _encode(fact: Fact, leavings: list[str]) -> list[Any]:
    """A fact as the script reads it (see `RECORD`); no cart deadline is 0 (no deadline is
    that early). Its leaving record goes to `leavings`, passed as arguments of their own."""
    row: list[Any] = [fact.offset, fact.at, fact.exit_due, fact.cart_due or 0, 0,
                      " ".join(fact.segments), fact.counts, fact.entered, fact.progress,
                      fact.looped]  # fmt: skip
    if fact.leaving is not None:
        leavings.append(_leaving(fact.leaving))
        row[4] = len(leavings)
    while not row[-1] and len(row) > 6:  # the lists most facts leave empty
        row.pop()
    return row


def _leaving(leaving: Leaving) -> str:
    cart = leaving.cart
    return orjson.dumps(
        [
            leaving.journey_map,
            leaving.at,
            leaving.stage,
            " ".join(leaving.segments),
            leaving.touches,
            None if cart is None else [cart.at, cart.where, cart.value_cents],
            leaving.dwell_bin,
        ]
    ).decode()


def _pairs(flat: Sequence[Any]) -> dict[str, int]:
    return {_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def analytics_store(redis: RedisClient, settings: Settings) -> AnalyticsStore:
    """The analytics store as the settings configure it (consumers and API alike); a cart is
    abandoned as the abandonment model defines it (`PARCOURS_MODELS_ABANDON_AFTER_S`)."""
    analytics = settings.analytics
    return AnalyticsStore(
        redis,
        prefix=settings.redis.key_prefix,
        hour_retention_ms=int(analytics.hour_retention_days * 86_400_000),
        day_retention_ms=int(analytics.day_retention_days * 86_400_000),
        lateness_ms=int(analytics.allowed_lateness_s * 1000),
        abandon_after_ms=int(settings.models.abandon_after_s * 1000),
        sweep_batch=analytics.sweep_batch,
        max_touchpoints=analytics.max_touchpoints,
    )
