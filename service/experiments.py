"""Experiment definitions in Redis, and the per-process view every decision reads.

Definitions live in one hash, `<prefix>:{experiments}:defs`, name -> JSON
(`{"spec": ExperimentSpec, "created_at": ms, "updated_at": ms}`). The API writes them
(`PUT /v1/experiments/{name}`); the API and the state consumers read them through
`ExperimentBook`, which reloads at most every `refresh_s` seconds, so a change reaches every
process within that time. What an experiment has shown travels in the model snapshot
(`models.experiment_stats.ExperimentLedger`), not here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

from models.decisions import Decision, decide
from models.experiment_stats import ExperimentLedger
from models.experiments import ExperimentSpec
from models.state import JourneyState
from service.errors import StoreUnavailable
from service.keyspace import EXPERIMENTS_TAG
from service.store import REDIS_ERRORS, RedisClient

logger = logging.getLogger(__name__)


class Defined(NamedTuple):
    name: str
    spec: ExperimentSpec
    created_at: int
    updated_at: int

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            **self.spec.model_dump(mode="json"),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


class ExperimentStore:
    """Create, replace, read and delete definitions; each call one Redis command."""

    def __init__(self, redis: RedisClient, *, prefix: str) -> None:
        self._redis = redis
        self.key = f"{prefix}:{EXPERIMENTS_TAG}:defs"

    async def put(self, name: str, spec: ExperimentSpec, *, now_ms: int) -> Defined:
        old = await self.get(name)
        created = old.created_at if old is not None else now_ms
        record = Defined(name, spec, created, now_ms)
        blob = {"spec": spec.model_dump(mode="json"), "created_at": created, "updated_at": now_ms}
        try:
            await self._redis.hset(self.key, name, orjson.dumps(blob))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"writing experiment {name!r}: {exc}") from exc
        return record

    async def get(self, name: str) -> Defined | None:
        try:
            raw = await self._redis.hget(self.key, name)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading experiment {name!r}: {exc}") from exc
        return _decode(name, raw) if raw is not None else None

    async def list(self) -> list[Defined]:
        try:
            raw = await self._redis.hgetall(self.key)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading experiments: {exc}") from exc
        found = (_decode(_text(k), v) for k, v in sorted(raw.items()))
        return [d for d in found if d is not None]

    async def delete(self, name: str) -> bool:
        try:
            return bool(await self._redis.hdel(self.key, name))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"deleting experiment {name!r}: {exc}") from exc


class ExperimentBook:
    """The definitions this process decides with, reloaded at most every `refresh_s`."""

    def __init__(
        self,
        store: ExperimentStore,
        *,
        refresh_s: float,
        initial_stage: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._refresh_s = refresh_s
        self._initial = initial_stage
        self._clock = clock
        self._loaded_at: float | None = None
        self._by_point: dict[str, list[Defined]] = {}
        self._by_name: dict[str, ExperimentSpec] = {}

    async def refresh(self, *, force: bool = False) -> None:
        """Reload if due; a Redis failure keeps the definitions already loaded (logged)."""
        now = self._clock()
        if not force and self._loaded_at is not None and now - self._loaded_at < self._refresh_s:
            return
        try:
            defined = await self.store.list()
        except StoreUnavailable as exc:
            if self._loaded_at is None:
                raise
            logger.warning("keeping the experiments loaded before: %s", exc)
            return
        by_point: dict[str, list[Defined]] = {}
        for d in defined:
            if d.spec.active:
                by_point.setdefault(d.spec.decision, []).append(d)
        self._by_point, self._loaded_at = by_point, now
        self._by_name = {d.name: d.spec for d in defined}

    def spec(self, name: str) -> ExperimentSpec | None:
        """The definition of `name` as loaded (active or not)."""
        return self._by_name.get(name)

    def deciding(self, kind: str) -> bool:
        """Whether any active experiment decides at a point of `kind` (e.g. `recommendation`)."""
        prefix = f"{kind}:"
        return any(point.startswith(prefix) for point in self._by_point)

    def at(self, point: str) -> list[Defined]:
        """Active experiments deciding at `point` (e.g. `webhook:cart.abandoned`)."""
        return self._by_point.get(point, [])

    def decide(
        self,
        point: str,
        customer_id: str,
        state: JourneyState | None,
        ledger: ExperimentLedger,
    ) -> list[Decision]:
        """The customer's variant in every active experiment at `point`."""
        return [
            decide(d.name, d.spec, customer_id, state, ledger, self._initial)
            for d in self.at(point)
        ]

    def decide_in(
        self, name: str, customer_id: str, state: JourneyState | None, ledger: ExperimentLedger
    ) -> Decision | None:
        """The customer's variant in experiment `name` alone (None if it is not defined)."""
        spec = self.spec(name)
        if spec is None:
            return None
        return decide(name, spec, customer_id, state, ledger, self._initial)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(name: str, raw: bytes | str) -> Defined | None:
    try:
        data = orjson.loads(raw)
        spec = ExperimentSpec.model_validate(data["spec"])
        return Defined(name, spec, int(data["created_at"]), int(data["updated_at"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        logger.warning("ignoring experiment %r: unreadable definition (%s)", name, exc)
        return None
