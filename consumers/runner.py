"""The poll → handle → commit loop every Parcours worker runs, and its error policy.

- Offsets are committed only after the handler returns, i.e. after its effect is durable.
- A `Pipelined` handler folds the next batch while the one before is still being written:
  the runner commits a batch once what `begin` returned completes, and that before it polls
  the batch after next; a failure rewinds both batches in play.
- A retriable error (Redis or Kafka unavailable, write conflicts) rewinds the batch to its
  first offsets and backs off exponentially with jitter; nothing is committed meanwhile.
- Anything else propagates: the process exits non-zero and its supervisor restarts it.
- On revocation the listener waits for the in-flight batch to be handled and committed, so a
  rebalance hands partitions over at a clean boundary instead of replaying a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord

from models.errors import ParcoursError
from service.metrics import RunnerMetrics

logger = logging.getLogger(__name__)

Batch = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


class Handler(Protocol):
    async def handle(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None: ...


@runtime_checkable
class Pipelined(Protocol):
    """A handler that can take the next batch before the last one is durable."""

    async def begin(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> Awaitable[object]:
        """Take the batch on; returns what completes once its effect is durable."""
        ...

    def reset(self) -> None:
        """Forget the batch in flight (after a failure or a rebalance)."""


@runtime_checkable
class Lifecycle(Protocol):
    """Optional hooks for a handler whose durable state is not (only) the committed offsets."""

    async def on_assigned(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        """Called after an assignment, before the first poll; may seek."""

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Called once the in-flight batch is done, before the partitions go."""

    async def idle(self) -> None:
        """Called after a poll that returned nothing."""


class CollectBetweenBatches:
    """Run Python's cycle collector on a clock between polls instead of during batches.

    A batch keeps ~100k young objects alive until it is committed; automatic collection runs
    every few thousand allocations and walks those live objects each time without freeing
    any (measured: ~15% of the consumer's CPU). Journey data has no reference cycles, so
    reference counting frees a batch; the collector only needs to catch the occasional cycle
    from libraries, which a young-generation pass every ten seconds and a full pass every
    minute do. Not after every poll: with the next batch folded while the last is written,
    some batch is always alive, and each pass would walk it. Set-up objects are frozen out
    of the collector's view.
    """

    def __init__(self, young_every_s: float = 10.0, full_every_s: float = 60.0) -> None:
        self._young_every_s = young_every_s
        self._full_every_s = full_every_s
        self._last_young = self._last_full = time.monotonic()

    def start(self) -> None:
        gc.collect()
        gc.freeze()
        gc.disable()

    def after_poll(self) -> None:
        now = time.monotonic()
        if now - self._last_full >= self._full_every_s:
            gc.collect()
            self._last_full = self._last_young = now
        elif now - self._last_young >= self._young_every_s:
            gc.collect(1)
            self._last_young = now

    def stop(self) -> None:
        gc.enable()


class Backoff:
    """Exponential backoff with full jitter, capped."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self._initial = initial_s
        self._max = max_s
        self._attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self._max, self._initial * 2**self._attempt)
        self._attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0


async def until_done(
    op: Callable[[], Awaitable[None]],
    backoff: Backoff,
    what: str,
    stop: asyncio.Event | None = None,
) -> bool:
    """Run `op` until it succeeds (True) or `stop` is set (False), sleeping with `backoff`
    after each retriable `ParcoursError` (Redis or Kafka away); any other error propagates."""
    while stop is None or not stop.is_set():
        try:
            await op()
        except ParcoursError as exc:
            if not exc.retriable:
                raise
            delay = backoff.next_delay()
            logger.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
        else:
            return True
    return False


@dataclass(frozen=True)
class _InFlight:
    """A batch a pipelined handler took on: done once its effect is durable."""

    batch: Batch
    done: Awaitable[object]
    started: float


class BatchRunner:
    """Runs one consumer and one handler until `stop` is set."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        handler: Handler,
        metrics: RunnerMetrics,
        *,
        max_batch: int,
        poll_timeout_ms: int = 500,
        backoff: Backoff | None = None,
    ) -> None:
        self._consumer = consumer
        self._handler = handler
        self._metrics = metrics
        self._max_batch = max_batch
        self._poll_timeout_ms = poll_timeout_ms
        self._backoff = backoff or Backoff(0.2, 10.0)
        self._in_flight = asyncio.Lock()
        self._collector = CollectBetweenBatches()
        self._tail: _InFlight | None = None  # a pipelined batch taken on, not yet committed

    def listener(self) -> ConsumerRebalanceListener:
        """Pass to `consumer.subscribe(..., listener=...)`."""
        return _Listener(self)

    async def run(self, stop: asyncio.Event) -> None:
        self._collector.start()
        try:
            while not stop.is_set():
                batch: Batch = await self._consumer.getmany(
                    timeout_ms=self._poll_timeout_ms, max_records=self._max_batch
                )
                delay = 0.0
                if batch:
                    async with self._in_flight:
                        if isinstance(self._handler, Pipelined):
                            delay = await self._take_on(batch, self._handler)
                        else:
                            delay = await self._process(batch)
                elif isinstance(self._handler, Lifecycle) or self._tail is not None:
                    async with self._in_flight:
                        delay = await self._settle()
                        if not delay and isinstance(self._handler, Lifecycle):
                            delay = await self._idle(self._handler)
                del batch
                self._collector.after_poll()
                if delay:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
            async with self._in_flight:
                await self._settle()  # stopping: the last batch taken on is committed
        finally:
            self._collector.stop()

    async def _take_on(self, batch: Batch, handler: Pipelined) -> float:
        """Begin `batch`, then finish the batch taken on before it."""
        records = _records(batch)
        started = time.perf_counter()
        previous, self._tail = self._tail, None
        try:
            done = await handler.begin(records)
        except ParcoursError as exc:
            if not exc.retriable:
                raise
            self._rewind(batch)  # first: a failed batch before rewinds over it to older offsets
            delay = await self._finish(previous)
            handler.reset()
            return delay or self._retry_delay(exc, batch)
        self._tail = _InFlight(batch, done, started)
        return await self._finish(previous)

    async def _settle(self) -> float:
        """Finish the batch taken on, if any (before idling, stopping or a rebalance)."""
        tail, self._tail = self._tail, None
        return await self._finish(tail)

    async def _finish(self, tail: _InFlight | None) -> float:
        """Wait for `tail` to be durable and commit it. If it failed (retriably), the batch
        taken on after it fails too (its writes waited for this one's): rewind both, the
        older last, and reset the handler. Returns how long to back off (0 on success)."""
        if tail is None:
            return 0.0
        try:
            await tail.done
        except ParcoursError as exc:
            if not exc.retriable:
                raise
            newer, self._tail = self._tail, None
            if newer is not None:
                await asyncio.gather(newer.done, return_exceptions=True)
                self._rewind(newer.batch)
            self._rewind(tail.batch)
            if isinstance(self._handler, Pipelined):
                self._handler.reset()
            return self._retry_delay(exc, tail.batch)
        await self._succeeded(tail.batch, tail.started)
        return 0.0

    async def _succeeded(self, batch: Batch, started: float) -> None:
        """Commit a batch whose effect is durable, and observe it (from `started`)."""
        self._backoff.reset()
        await self._commit(batch)
        self._metrics.batch_size.observe(sum(len(r) for r in batch.values()))
        self._metrics.batch_seconds.observe(time.perf_counter() - started)

    def _retry_delay(self, exc: ParcoursError, batch: Batch) -> float:
        delay = self._backoff.next_delay()
        self._metrics.retries.labels(type(exc).__name__).inc()
        logger.warning("batch %s not applied (%s); retrying in %.1fs", _describe(batch), exc, delay)
        return delay

    async def _process(self, batch: Batch) -> float:
        """Handle and commit; returns how long to back off (0 on success)."""
        started = time.perf_counter()
        try:
            await self._handler.handle(_records(batch))
        except ParcoursError as exc:
            if not exc.retriable:
                raise
            self._rewind(batch)
            return self._retry_delay(exc, batch)
        await self._succeeded(batch, started)
        return 0.0

    async def _idle(self, handler: Lifecycle) -> float:
        """The handler's work between empty polls; a retriable failure backs off, as a batch's
        does, instead of stopping the worker."""
        try:
            await handler.idle()
        except ParcoursError as exc:
            if not exc.retriable:
                raise
            delay = self._backoff.next_delay()
            self._metrics.retries.labels(type(exc).__name__).inc()
            logger.warning("idle work not done (%s); retrying in %.1fs", exc, delay)
            return delay
        return 0.0

    def _rewind(self, batch: Batch) -> None:
        assigned = self._consumer.assignment()
        for tp, records in batch.items():
            if tp in assigned:
                self._consumer.seek(tp, records[0].offset)

    async def _commit(self, batch: Batch) -> None:
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            self._metrics.commit_failures.inc()
            logger.warning(
                "commit of %s refused (%s); it will be redelivered", _describe(batch), exc
            )
            return
        for tp, position in offsets.items():
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                self._metrics.lag.labels(str(tp.partition)).set(max(0, highwater - position))


def _records(batch: Batch) -> list[ConsumerRecord[bytes, bytes]]:
    """A batch's records, partition after partition (each in log order)."""
    return [record for records in batch.values() for record in records]


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: BatchRunner) -> None:
        self._runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._runner._in_flight:
            await self._runner._settle()  # the batch taken on is committed before they go
            handler = self._runner._handler
            if isinstance(handler, Pipelined):
                handler.reset()  # its view of the journeys is only good while it owns them
            if revoked and isinstance(handler, Lifecycle):
                await handler.on_revoked(revoked)
            for tp in revoked:
                with contextlib.suppress(KeyError):
                    self._runner._metrics.lag.remove(str(tp.partition))
        logger.info("partitions revoked: %s", _partitions(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._runner._metrics.rebalances.inc()
        self._runner._metrics.assigned.set(len(assigned))
        handler = self._runner._handler
        if isinstance(handler, Lifecycle):
            await handler.on_assigned(self._runner._consumer, assigned)
        logger.info("partitions assigned: %s", _partitions(assigned))


def _partitions(tps: set[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps)) or "none"


def _describe(batch: Batch) -> str:
    return ", ".join(
        f"{tp.topic}[{tp.partition}]@{records[0].offset}-{records[-1].offset}"
        for tp, records in batch.items()
    )
