"""API keys in Redis, and the check every protected request passes.

Keys live in one hash, `<prefix>:keys`, id -> JSON record (`models.access.ApiKey`); a
revoked key stays there, marked, so a listing shows who held access and until when. The API
keeps each record it reads for `cache_s` seconds, so a revocation takes effect within that
time on every process without costing a Redis read per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from models.access import ApiKey, Scope, TokenBucket, decode_key, encode_key, grants, split
from models.errors import ParcoursError
from service.errors import StoreUnavailable
from service.store import REDIS_ERRORS, RedisClient

_CACHE_LIMIT: Final = 10_000
"""Records (found or not) kept per process; past it the cache starts again empty, so that
made-up key ids cannot grow it without bound."""


class KeyStore:
    """Creates, lists and revokes keys; Redis failures are `StoreUnavailable`."""

    def __init__(self, redis: RedisClient, *, prefix: str) -> None:
        self._redis = redis
        self.key = f"{prefix}:keys"

    async def add(self, key: ApiKey) -> None:
        try:
            added = await self._redis.hsetnx(self.key, key.id, encode_key(key))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"storing an API key: {exc}") from exc
        if not added:  # 48 random bits: only a broken random source gets here
            raise ParcoursError(f"API key id {key.id!r} already exists")

    async def get(self, key_id: str) -> ApiKey | None:
        try:
            raw = await self._redis.hget(self.key, key_id)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading an API key: {exc}") from exc
        return decode_key(raw) if raw is not None else None

    async def list(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        try:
            raw = await self._redis.hvals(self.key)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"listing API keys: {exc}") from exc
        return sorted((decode_key(r) for r in raw), key=lambda k: (k.created_at, k.id))

    async def revoke(self, key_id: str, *, now_ms: int) -> ApiKey | None:
        """Mark a key revoked (kept for the record); None if there is no such key. Revoking
        twice keeps the first time."""
        key = await self.get(key_id)
        if key is None or not key.active:
            return key
        revoked = replace(key, revoked_at=now_ms)
        try:
            await self._redis.hset(self.key, key_id, encode_key(revoked))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"revoking an API key: {exc}") from exc
        return revoked


class Denied(ParcoursError):
    """A request the key does not allow: `status` 401 (no valid key) or 403 (wrong scope)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class RateLimited(ParcoursError):
    def __init__(self, key_id: str, retry_after_s: float) -> None:
        super().__init__(f"key {key_id} is over its request rate")
        self.retry_after_s = retry_after_s


@dataclass
class Gate:
    """Checks a presented token against the stored keys and a per-key token bucket.

    The bucket is per API process: with N workers a key gets up to N times its rate.
    """

    keys: KeyStore
    cache_s: float
    default_rate_per_s: float
    burst_s: float
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._cache: dict[str, tuple[ApiKey | None, float]] = {}
        self._buckets: dict[str, TokenBucket] = {}

    async def admit(self, token: str | None, needed: Scope) -> ApiKey:
        """The key behind `token` if it may do `needed` now; else `Denied` or `RateLimited`."""
        if not token:
            raise Denied(401, "an API key is required: send 'Authorization: Bearer <key>'")
        parts = split(token)
        if parts is None:
            raise Denied(401, "the API key is malformed")
        key_id, secret = parts
        key = await self._lookup(key_id)
        if key is None or not key.matches(secret):
            raise Denied(401, "the API key is not valid")
        if not key.active:
            raise Denied(401, "the API key has been revoked")
        if not grants(key.scopes, needed):
            held = ", ".join(sorted(key.scopes))
            raise Denied(403, f"this route needs the '{needed}' scope; the key holds: {held}")
        wait = self._bucket(key).take(self.clock())
        if wait > 0:
            raise RateLimited(key.id, wait)
        return key

    async def _lookup(self, key_id: str) -> ApiKey | None:
        now = self.clock()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[1] < self.cache_s:
            return cached[0]
        key = await self.keys.get(key_id)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key_id] = (key, now)
        return key

    def _bucket(self, key: ApiKey) -> TokenBucket:
        rate = key.rate_per_s or self.default_rate_per_s
        bucket = self._buckets.get(key.id)
        if bucket is None or bucket.rate != rate:
            if len(self._buckets) >= _CACHE_LIMIT:
                self._buckets.clear()
            bucket = TokenBucket.full(rate, max(1.0, rate * self.burst_s), self.clock())
            self._buckets[key.id] = bucket
        return bucket
