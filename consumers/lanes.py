"""One lane per subscription: its own queue and workers, so a slow receiver only slows itself.

A lane holds at most `max_backlog` deliveries; `offer` refuses more (the dispatcher parks
them in Redis instead), which bounds both memory and how long a partition's commit can wait
on one receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from models.breaker import Breaker
from models.delivery import PendingDelivery
from models.webhooks import Subscription

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Job:
    """A delivery to make: fresh from a trigger record (`on_settled` set) or claimed when parked."""

    delivery: PendingDelivery
    on_settled: Callable[[], None] | None = None
    parked: bool = False

    def settle(self) -> None:
        if self.on_settled is not None:
            self.on_settled()
            self.on_settled = None


class Lane:
    """A subscription's queue, its `concurrency` workers and its breaker."""

    def __init__(
        self,
        sub: Subscription,
        breaker: Breaker,
        work: Callable[[Lane, Job], Awaitable[None]],
        on_crash: Callable[[BaseException], None],
        *,
        concurrency: int,
        max_backlog: int,
    ) -> None:
        self.sub = sub
        self.breaker = breaker
        self._work = work
        self._max_backlog = max_backlog
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._workers = [
            asyncio.create_task(self._serve(), name=f"webhook-lane-{sub.id}-{i}")
            for i in range(concurrency)
        ]
        for worker in self._workers:
            worker.add_done_callback(lambda task: _report(task, on_crash))

    def offer(self, job: Job) -> bool:
        """Queue `job` unless the backlog is full."""
        if self._queue.qsize() >= self._max_backlog:
            return False
        self._queue.put_nowait(job)
        return True

    def backlog(self) -> int:
        return self._queue.qsize()

    async def close(self) -> None:
        """Stop the workers; queued and in-flight fresh deliveries stay uncommitted."""
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def _serve(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._work(self, job)
            finally:
                self._queue.task_done()


def _report(task: asyncio.Task[None], on_crash: Callable[[BaseException], None]) -> None:
    """A worker that died of anything but cancellation takes the process down with it."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        on_crash(exc)
