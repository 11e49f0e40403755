"""Model snapshots in Redis: the trainer publishes them, every reader hot-reloads them.

The hash `<prefix>:models` holds the newest snapshot: `version` (an integer, +1 per publish),
`blob` (bytes from `models.snapshot.dump_snapshot`), `meta` (JSON: per model the samples
seen, served version and progressive metrics) and `published_at`. A publish names the
version it replaces, so a second trainer cannot silently overwrite the first one's models.
Readers poll only the version field, at most every `interval_s`, and fetch the blob when it
moves; a snapshot that fails to load is refused and the one being served is kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final, NamedTuple

import orjson

from models.errors import ParcoursError
from models.snapshot import SnapshotError, load_snapshot
from service.errors import StoreUnavailable
from service.metrics import ModelMetrics
from service.store import REDIS_ERRORS, RedisClient

logger = logging.getLogger(__name__)

_PUBLISH: Final = """
local current = redis.call('HGET', KEYS[1], 'version') or '0'
if current ~= ARGV[1] then
  return -1 - tonumber(current)
end
local version = tonumber(current) + 1
redis.call('HSET', KEYS[1], 'version', version, 'blob', ARGV[2], 'meta', ARGV[3],
  'published_at', ARGV[4])
return version
"""


class SnapshotConflict(ParcoursError):
    """Another trainer published since this one last did; two trainers must not share a key."""


class Snapshot(NamedTuple):
    version: int
    blob: bytes
    meta: dict[str, Any]


class SnapshotStore:
    """Reads and publishes the newest snapshot; Redis failures surface as `StoreUnavailable`."""

    def __init__(self, redis: RedisClient, *, prefix: str) -> None:
        self._redis = redis
        self.key = f"{prefix}:models"
        self._publish = redis.register_script(_PUBLISH)

    async def publish(self, blob: bytes, meta: dict[str, Any], *, replaces: int) -> int:
        """Store a snapshot as version `replaces + 1`; raises `SnapshotConflict` otherwise."""
        meta = {**meta, "published_at": time.time()}
        args = [replaces, blob, orjson.dumps(meta), meta["published_at"]]
        try:
            version = int(await self._publish(keys=[self.key], args=args))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"publishing a model snapshot: {exc}") from exc
        if version < 0:
            raise SnapshotConflict(
                f"snapshot version is {-1 - version}, not {replaces}: is another trainer running?"
            )
        return version

    async def version(self) -> int | None:
        try:
            raw = await self._redis.hget(self.key, "version")
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading the model version: {exc}") from exc
        return int(raw) if raw is not None else None

    async def fetch(self, *, blob: bool = True) -> Snapshot | None:
        """The newest snapshot (without its blob if `blob` is false), or None before the first."""
        fields = ["version", "meta", "blob"] if blob else ["version", "meta"]
        try:
            values = await self._redis.hmget(self.key, fields)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading a model snapshot: {exc}") from exc
        if values[0] is None:
            return None
        meta = orjson.loads(values[1]) if values[1] else {}
        raw = values[2] if blob else None
        return Snapshot(int(values[0]), raw if isinstance(raw, bytes) else b"", meta)


class Loaded(NamedTuple):
    version: int
    models: Any
    meta: dict[str, Any]


class ModelRegistry:
    """The snapshot this process serves, refreshed from Redis when a newer one appears."""

    def __init__(
        self,
        store: SnapshotStore,
        metrics: ModelMetrics,
        *,
        interval_s: float = 2.0,
        accepts: Callable[[Any], bool] = lambda models: True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._interval_s = interval_s
        self._accepts = accepts
        self._clock = clock
        self._checked_at = float("-inf")
        self._refused: int | None = None
        self.current: Loaded | None = None

    async def refresh(self, *, force: bool = False) -> Loaded | None:
        """Load a newer snapshot if there is one and it is time to look; never raises for it."""
        now = self._clock()
        if not force and now - self._checked_at < self._interval_s:
            return self.current
        self._checked_at = now
        try:
            version = await self._store.version()
            current = self.current.version if self.current else None
            if version is None or version in (current, self._refused):
                return self.current
            snapshot = await self._store.fetch()
        except StoreUnavailable as exc:
            logger.warning("cannot check for a newer model snapshot: %s", exc)
            return self.current
        if snapshot is not None:
            self._load(snapshot)
        return self.current

    def _unpack(self, blob: bytes) -> Any:
        models, _ = load_snapshot(blob)
        if not self._accepts(models):
            raise SnapshotError(f"unexpected object {type(models).__name__}")
        return models

    def _load(self, snapshot: Snapshot) -> None:
        try:
            models = self._unpack(snapshot.blob)
        except SnapshotError as exc:
            self._refused = snapshot.version
            self._metrics.refused.inc()
            logger.error(  # noqa: TRY400 - the reason is the message; no traceback needed
                "model snapshot v%d refused (%s); still serving %s",
                snapshot.version,
                exc,
                f"v{self.current.version}" if self.current else "the fallback",
            )
            return
        self.current = Loaded(snapshot.version, models, snapshot.meta)
        self._metrics.loaded.inc()
        self._metrics.version.set(snapshot.version)
        self._metrics.published_at.set(snapshot.meta.get("published_at", 0))
        for model, summary in snapshot.meta.get("models", {}).items():
            for metric, value in summary.get("metrics", {}).items():
                self._metrics.served_metric.labels(model, metric).set(value)
        logger.info("model snapshot v%d loaded", snapshot.version)
