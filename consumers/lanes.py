"""One lane per subscription: its own queue and workers, so a slow receiver only slows itself.

A lane holds at most `max_backlog` deliveries; `offer` refuses more (the dispatcher parks
them in Redis instead), which bounds both memory and how long a partition's commit can wait
on one receiver. A worker's slot is held for the HTTP attempt only: the bookkeeping that
follows (logging, settling) runs beside the next attempt, so `concurrency` bounds what the
receiver sees, not Redis round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeAlias

from models.breaker import Breaker
from models.delivery import PendingDelivery
from models.webhooks import Subscription

logger = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)  # identity: a lane tracks the jobs it holds
class Job:
    """A delivery to make: fresh from a trigger record (`on_settled` set) or claimed when parked."""

    delivery: PendingDelivery
    on_settled: Callable[[], None] | None = None
    parked: bool = False

    def settle(self) -> None:
        if self.on_settled is not None:
            self.on_settled()
            self.on_settled = None


FollowUp: TypeAlias = Coroutine[Any, Any, None]
"""What is left of a job once its attempt is over; run outside the lane's slots."""


class Lane:
    """A subscription's queue, its `concurrency` workers and its breaker."""

    def __init__(
        self,
        sub: Subscription,
        breaker: Breaker,
        work: Callable[[Lane, Job], Awaitable[FollowUp | None]],
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
        self._on_crash = on_crash
        self._follow_ups: dict[asyncio.Task[None], Job] = {}
        self._attempting: set[Job] = set()
        self._workers = [
            asyncio.create_task(self._serve(), name=f"webhook-lane-{sub.id}-{i}")
            for i in range(concurrency)
        ]
        for worker in self._workers:
            worker.add_done_callback(lambda task: _report(task, self._on_crash))

    def offer(self, job: Job) -> bool:
        """Queue `job` unless the backlog is full."""
        if self._queue.qsize() >= self._max_backlog:
            return False
        self._queue.put_nowait(job)
        return True

    def backlog(self) -> int:
        return self._queue.qsize()

    async def close(self, drop: Callable[[Job], None] | None = None) -> None:
        """Stop the workers. Without `drop` (shutting down), queued and in-flight fresh
        deliveries stay uncommitted, to be read again; with it (the subscription is gone),
        each of them is handed to `drop`, which settles it."""
        unfinished = [*self._attempting, *self._follow_ups.values()]
        tasks = [*self._workers, *self._follow_ups]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while not self._queue.empty():
            unfinished.append(self._queue.get_nowait())
        if drop is not None:
            for job in unfinished:
                drop(job)

    async def _serve(self) -> None:
        while True:
            job = await self._queue.get()
            self._attempting.add(job)
            try:
                follow_up = await self._work(self, job)
            finally:
                self._attempting.discard(job)
                self._queue.task_done()
            if follow_up is not None:
                task = asyncio.create_task(follow_up)
                self._follow_ups[task] = job
                task.add_done_callback(self._follow_up_done)

    def _follow_up_done(self, task: asyncio.Task[None]) -> None:
        self._follow_ups.pop(task, None)
        _report(task, self._on_crash)


def _report(task: asyncio.Task[None], on_crash: Callable[[BaseException], None]) -> None:
    """A worker that died of anything but cancellation takes the process down with it."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        on_crash(exc)
