"""The dispatcher's consumer loop: read triggers, hand deliveries to lanes, commit what is done.

Unlike `BatchRunner`, a batch is not handled before the next poll: deliveries to different
receivers finish in any order, and waiting for the slowest would let one receiver hold back
every other. Each record is tracked until all of its deliveries have settled, and each
partition commits the end of its contiguous run of settled records (`models.offsets`), so a
crash loses nothing: whatever was not settled is read again and delivered again (receivers
deduplicate by delivery id). When too many deliveries are unsettled the loop pauses its
partitions, polling on so the group keeps it as a member.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from functools import partial

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord

from consumers.dispatcher import Dispatcher
from consumers.lanes import Job
from consumers.runner import Backoff, until_done
from models.errors import ParcoursError
from models.offsets import OffsetTracker
from models.triggers import Trigger
from service.logs import at_record
from service.metrics import DispatcherMetrics

logger = logging.getLogger(__name__)


class DispatchLoop:
    """Runs one consumer of the triggers topic for one `Dispatcher` until `stop` is set."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        dispatcher: Dispatcher,
        metrics: DispatcherMetrics,
        *,
        max_pending: int,
        refresh_s: float,
        drain_s: float,
        max_batch: int,
        poll_timeout_ms: int = 200,
    ) -> None:
        self._consumer = consumer
        self._dispatcher = dispatcher
        self._metrics = metrics
        self._max_pending = max_pending
        self._refresh_s = refresh_s
        self._drain_s = drain_s
        self._max_batch = max_batch
        self._poll_timeout_ms = poll_timeout_ms
        self._tracker = OffsetTracker()
        self._committed: dict[TopicPartition, int] = {}
        self._lock = asyncio.Lock()
        self._refreshed_at = 0.0

    def listener(self) -> ConsumerRebalanceListener:
        return _Listener(self)

    async def run(self, stop: asyncio.Event) -> None:
        await self._first_subscriptions(stop)
        while not stop.is_set():
            if self._dispatcher.crashed.done():
                self._dispatcher.crashed.result()
            await self._refresh()
            self._throttle()
            batch = await self._consumer.getmany(
                timeout_ms=self._poll_timeout_ms, max_records=self._max_batch
            )
            async with self._lock:
                for tp, records in batch.items():
                    for record in records:
                        await self._take(tp, record)
                await self._commit()
        await self.drain(list(self._consumer.assignment()))

    async def drain(self, partitions: list[TopicPartition]) -> None:
        """Give in-flight deliveries of `partitions` a moment to settle, then commit."""
        deadline = time.monotonic() + self._drain_s
        pending = sum(self._tracker.pending(tp.partition) for tp in partitions)
        while pending and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            pending = sum(self._tracker.pending(tp.partition) for tp in partitions)
        await self._commit()

    async def _take(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        generation = self._tracker.generation(tp.partition)
        if generation is None:
            return  # revoked while this batch was in hand; the next owner reads it
        try:
            trigger = Trigger.from_json(record.value)
        except ValueError as exc:
            self._metrics.triggers.labels("invalid").inc()
            logger.warning(
                "skipping %s[%d]@%d: %s", tp.topic, tp.partition, record.offset, exc,
                extra=at_record(tp.topic, tp.partition, record.offset),
            )  # fmt: skip
            self._tracker.add(tp.partition, record.offset, 0)
            return
        deliveries = self._dispatcher.fan_out(trigger, record.timestamp)
        self._metrics.triggers.labels("fanned_out" if deliveries else "unmatched").inc()
        self._tracker.add(tp.partition, record.offset, len(deliveries))
        settle = partial(self._tracker.settle, tp.partition, generation, record.offset)
        for delivery in deliveries:
            await self._dispatcher.submit(Job(delivery, settle))

    async def _commit(self) -> None:
        offsets = {}
        for tp in self._consumer.assignment():
            position = self._tracker.committable(tp.partition)
            if position is not None and position > self._committed.get(tp, -1):
                offsets[tp] = position
        self._metrics.pending.set(self._tracker.pending())
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            self._metrics.commit_failures.inc()
            logger.warning("commit of %s refused (%s); it will be retried", offsets, exc)
            return
        self._committed.update(offsets)
        for tp, position in offsets.items():
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                self._metrics.lag.labels(str(tp.partition)).set(max(0, highwater - position))

    def _throttle(self) -> None:
        """Pause reading while too many deliveries are unsettled; resume once they drain."""
        if self._tracker.pending() >= self._max_pending:
            self._consumer.pause(*self._consumer.assignment())
        elif self._consumer.paused():
            self._consumer.resume(*self._consumer.paused())

    async def _refresh(self) -> None:
        if time.monotonic() - self._refreshed_at < self._refresh_s:
            return
        self._refreshed_at = time.monotonic()
        try:
            await self._dispatcher.refresh_subscriptions()
        except ParcoursError as exc:
            if not exc.retriable:
                raise
            logger.warning("subscriptions not refreshed (%s); using the ones loaded", exc)

    async def _first_subscriptions(self, stop: asyncio.Event) -> None:
        """No trigger is read before the subscriptions are known: it would go to nobody."""
        loaded = await until_done(
            self._dispatcher.refresh_subscriptions,
            Backoff(0.2, 10.0),
            "loading subscriptions",
            stop,
        )
        if loaded:
            self._refreshed_at = time.monotonic()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: DispatchLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        loop = self._loop
        async with loop._lock:
            await loop.drain(list(revoked))
            for tp in revoked:
                loop._tracker.forget(tp.partition)
                loop._committed.pop(tp, None)
                with contextlib.suppress(KeyError):
                    loop._metrics.lag.remove(str(tp.partition))
        logger.info("partitions revoked: %s", _names(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        loop = self._loop
        loop._metrics.rebalances.inc()
        loop._metrics.assigned.set(len(assigned))
        for tp in assigned:
            loop._tracker.assign(tp.partition)
            loop._committed.pop(tp, None)
        logger.info("partitions assigned: %s", _names(assigned))


def _names(tps: set[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps)) or "none"
