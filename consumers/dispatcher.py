"""The webhook dispatcher's delivery logic: fan a trigger out, attempt, and settle each delivery.

A delivery settles (and stops holding back its trigger record's offset) once it is delivered,
dead-lettered, or parked in Redis. Only the first attempt of a fresh delivery happens in
memory; a failed attempt parks the delivery until its backoff is over, and so does a full lane
or an open breaker, so a receiver that is down costs Redis entries, not uncommitted offsets.
Writes that settle a delivery are retried until Redis or Kafka take them: a delivery is never
reported settled before its record of being parked or dead-lettered is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

from consumers.group_commit import GroupCommit
from consumers.lanes import FollowUp, Job, Lane
from consumers.runner import Backoff, until_done
from consumers.webhook_deadletters import WebhookDeadLetters
from models.breaker import STATE_VALUES, Breaker
from models.delivery import AttemptRecord, AttemptResult, Outcome, PendingDelivery, RetryPolicy
from models.errors import ParcoursError
from models.journeymap import QuietHours
from models.triggers import Trigger
from models.webhooks import Subscription, delivery_id
from service.deliveries import DeliveryStore
from service.metrics import DispatcherMetrics
from service.settings import WebhookSettings
from service.subscriptions import SubscriptionStore
from service.webhook_sender import WebhookSender

logger = logging.getLogger(__name__)

_CLAIM_BATCH = 100


class Dispatcher:
    """Owns the lanes; the dispatch loop feeds it triggers and `run_parked` feeds it retries."""

    def __init__(
        self,
        subscriptions: SubscriptionStore,
        deliveries: DeliveryStore,
        sender: WebhookSender,
        dead_letters: WebhookDeadLetters,
        metrics: DispatcherMetrics,
        settings: WebhookSettings,
        *,
        clock: Callable[[], float] = time.time,
        unit: Callable[[], float] = random.random,
        quiet_hours: QuietHours | None = None,
        quiet_types: frozenset[str] = frozenset(),
    ) -> None:
        self._subscriptions = subscriptions
        self._deliveries = deliveries
        self._sender = sender
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._settings = settings
        self._policy = RetryPolicy(
            settings.max_attempts,
            settings.backoff_base_s,
            settings.backoff_max_s,
            settings.retry_after_max_s,
        )
        self._clock = clock
        self._unit = unit
        self._quiet = quiet_hours
        self._quiet_types = quiet_types
        self._subs: list[Subscription] | None = None
        self._version = -1
        self._lanes: dict[str, Lane] = {}
        self._writes: set[asyncio.Task[None]] = set()
        self.crashed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._recorded = GroupCommit[tuple[str, AttemptRecord]](self._record_delivered)
        self._recorder = asyncio.create_task(self._recorded.run(), name="webhook-delivered")
        self.watch(self._recorder)

    async def refresh_subscriptions(self) -> None:
        """Reload subscriptions if they changed; `StoreUnavailable` if Redis is down."""
        version = await self._subscriptions.version()
        if version == self._version and self._subs is not None:
            return
        subs = await self._subscriptions.list()
        self._subs, self._version = subs, version
        current = {sub.id: sub for sub in subs}
        for sub_id in [s for s in self._lanes if s not in current]:
            await self._lanes.pop(sub_id).close(drop=self._drop)
            self._metrics.breaker.remove(sub_id)
        for sub in subs:
            if sub.id in self._lanes:
                self._lanes[sub.id].sub = sub
        logger.info("webhook subscriptions loaded: %d (version %d)", len(subs), version)

    def fan_out(self, trigger: Trigger, record_ms: int) -> list[PendingDelivery]:
        """One delivery per subscription that wants `trigger`."""
        assert self._subs is not None, "refresh_subscriptions first"
        return [
            PendingDelivery(trigger, sub.id, delivery_id(trigger.id, sub.id), 0, record_ms)
            for sub in self._subs
            if sub.wants(trigger)
        ]

    async def submit(self, job: Job) -> None:
        """Queue `job` on its subscription's lane, or park it if the lane cannot take it now."""
        delivery, now = job.delivery, self._clock()
        sub = self._sub(delivery.subscription_id)
        if sub is None:
            await self._durably(lambda: self._deliveries.unpark(delivery.delivery_id))
            self._metrics.deliveries.labels("dropped").inc()
            job.settle()
            return
        lane = self._lane(sub)
        quiet_until = self._quiet_until(delivery, now)
        if quiet_until is not None:
            await self._park(job, quiet_until, "quiet_hours")
        elif not sub.enabled:
            await self._park(job, now + self._settings.breaker_cooldown_s, "disabled")
        elif lane.breaker.state == "open" and now < lane.breaker.retry_at:
            await self._park(job, lane.breaker.retry_at, "breaker_open")
        elif not lane.offer(job):
            await self._park(job, now + self._settings.park_poll_s, "backlog")

    def _drop(self, job: Job) -> None:
        """A delivery to a deleted subscription: settled, never attempted again. A parked copy
        stays in Redis until claimed, when `submit` finds no subscription and removes it."""
        self._metrics.deliveries.labels("dropped").inc()
        job.settle()

    def _quiet_until(self, delivery: PendingDelivery, now: float) -> float | None:
        """The end of the journey map's quiet hours, for the capped (marketing) trigger types."""
        if self._quiet is None or delivery.trigger.type not in self._quiet_types:
            return None
        return self._quiet.ends_at(now)

    async def run_parked(self, stop: asyncio.Event) -> None:
        """Claim parked deliveries as they come due and submit them, until `stop` is set."""
        settings = self._settings
        backoff = Backoff(settings.park_poll_s, 30.0)
        while not stop.is_set():
            delay = settings.park_poll_s
            try:
                if self._subs is not None:
                    due = await self._deliveries.claim_due(
                        self._clock(), _CLAIM_BATCH, settings.park_lease_s
                    )
                    for delivery in due:
                        await self.submit(Job(delivery, parked=True))
                    self._metrics.parked_backlog.set(await self._deliveries.parked_count())
                    if len(due) == _CLAIM_BATCH:
                        delay = 0.0
                backoff.reset()
            except ParcoursError as exc:
                if not exc.retriable:
                    raise
                delay = backoff.next_delay()
                logger.warning("parked deliveries unavailable (%s); retrying in %.1fs", exc, delay)
            await _sleep_unless(stop, delay)

    async def close(self) -> None:
        for lane in self._lanes.values():
            await lane.close()
        self._lanes.clear()
        self._recorder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._recorder

    def pending_in_lanes(self) -> int:
        return sum(lane.backlog() for lane in self._lanes.values())

    async def _attempt(self, lane: Lane, job: Job) -> FollowUp | None:
        """One HTTP attempt in the lane's slot; returns the bookkeeping that settles it."""
        now, before = self._clock(), lane.breaker.state
        allowed = lane.breaker.allow(now)
        if lane.breaker.state != before:
            self._publish_breaker(lane)
        if not allowed:
            await self._park(job, lane.breaker.wait_until(now), "breaker_open")
            return None
        result = await self._sender.send(lane.sub, job.delivery)
        job.delivery = job.delivery.after(result)
        self._metrics.attempts.labels(result.kind).inc()
        self._metrics.attempt_seconds.observe(result.latency_s)
        self._breaker_learns(lane, result)
        if result.verdict == "delivered":
            return self._delivered(job, job.delivery, result)
        delay = self._policy.next_delay(result, job.delivery.attempts, self._unit())
        if delay is None:
            return self._dead(job, job.delivery, result)
        return self._retry(job, result, self._retry_due(lane, delay))

    async def _retry(self, job: Job, result: AttemptResult, due: float) -> None:
        await self._log(job.delivery, result, "retrying")
        await self._park(job, due, "retry")

    def _retry_due(self, lane: Lane, delay: float) -> float:
        """When to try again; behind the deliveries already waiting if the breaker is open.

        Otherwise a failed probe would come due first again and be the next probe, using up
        one delivery's attempts on a receiver that is down while the others wait untouched.
        """
        due = self._clock() + delay
        if lane.breaker.state == "open":
            due = max(due, lane.breaker.retry_at + max(delay, 0.001))
        return due

    async def _delivered(self, job: Job, delivery: PendingDelivery, result: AttemptResult) -> None:
        record = AttemptRecord.of(delivery, result, "delivered", self._clock())
        await self._recorded.add((delivery.subscription_id, record))
        self._metrics.deliveries.labels("delivered").inc()
        if delivery.record_ms:
            lag = max(0.0, self._clock() - delivery.record_ms / 1000)
            self._metrics.delivery_lag.observe(lag)
        job.settle()

    async def _dead(self, job: Job, delivery: PendingDelivery, result: AttemptResult) -> None:
        reason = "refused" if result.refused else "rejected"
        if result.verdict == "retry":
            reason = "exhausted"
        await self._log(delivery, result, "dead_lettered")
        await self._durably(lambda: self._dead_letters.send(delivery, reason))
        await self._durably(lambda: self._deliveries.bury(delivery))
        self._metrics.deliveries.labels("dead_lettered").inc()
        self._metrics.dead_lettered.labels(reason).inc()
        logger.warning(
            "webhook delivery %s of trigger %s to %s dead-lettered after %d attempts: %s",
            delivery.delivery_id, delivery.trigger.id, delivery.subscription_id,
            delivery.attempts, result.error,
            extra={
                "delivery_id": delivery.delivery_id, "trigger_id": delivery.trigger.id,
                "subscription_id": delivery.subscription_id,
                "customer_id": delivery.trigger.customer_id,
            },
        )  # fmt: skip
        job.settle()

    async def _park(self, job: Job, due: float, reason: str) -> None:
        await self._durably(lambda: self._deliveries.park(job.delivery, due))
        self._metrics.parked.labels(reason).inc()
        job.settle()

    async def _record_delivered(self, delivered: list[tuple[str, AttemptRecord]]) -> None:
        """The group commit's write: every waiting delivery logged and unparked in one call."""
        await self._durably(lambda: self._deliveries.delivered(delivered))

    async def _log(
        self, delivery: PendingDelivery, result: AttemptResult, outcome: Outcome
    ) -> None:
        record = AttemptRecord.of(delivery, result, outcome, self._clock())
        await self._durably(lambda: self._deliveries.log(delivery.subscription_id, record))

    def _breaker_learns(self, lane: Lane, result: AttemptResult) -> None:
        """Only a receiver that cannot answer counts against it; a 4xx shows it is up."""
        before = lane.breaker.state
        if result.verdict == "retry":
            lane.breaker.record_failure(self._clock())
        else:
            lane.breaker.record_success()
        if lane.breaker.state != before:
            if lane.breaker.state == "open":
                logger.warning(
                    "webhook %s breaker open until %.0f after %d failures",
                    lane.sub.id, lane.breaker.retry_at, lane.breaker.failures,
                )  # fmt: skip
            self._publish_breaker(lane)

    def _publish_breaker(self, lane: Lane) -> None:
        state = lane.breaker.state
        self._metrics.breaker.labels(lane.sub.id).set(STATE_VALUES[state])
        task = asyncio.create_task(
            self._deliveries.save_breaker(lane.sub.id, lane.breaker.snapshot())
        )
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        task.add_done_callback(_ignore_failure)

    def _lane(self, sub: Subscription) -> Lane:
        lane = self._lanes.get(sub.id)
        if lane is None:
            settings = self._settings
            breaker = Breaker(
                settings.breaker_failures, settings.breaker_cooldown_s,
                settings.breaker_max_cooldown_s,
            )  # fmt: skip
            lane = Lane(
                sub, breaker, self._attempt, self._crash,
                concurrency=settings.concurrency, max_backlog=settings.max_backlog,
            )  # fmt: skip
            self._lanes[sub.id] = lane
            self._metrics.breaker.labels(sub.id).set(0)
        return lane

    def _sub(self, sub_id: str) -> Subscription | None:
        lane = self._lanes.get(sub_id)
        if lane is not None:
            return lane.sub
        return next((sub for sub in self._subs or () if sub.id == sub_id), None)

    def watch(self, task: asyncio.Task[None]) -> None:
        """A background task of the dispatcher's that fails takes the dispatch loop down."""
        task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._crash(exc)

    def _crash(self, exc: BaseException) -> None:
        if not self.crashed.done():
            self.crashed.set_exception(exc)

    async def _durably(self, write: Callable[[], Awaitable[None]]) -> None:
        """Retry a settling write through Redis or Kafka outages (cancellation ends it)."""
        await until_done(write, Backoff(0.1, 10.0), "webhook bookkeeping")


def _ignore_failure(task: asyncio.Task[None]) -> None:
    """The breaker snapshot in Redis is for display; the next change writes it again."""
    if not task.cancelled() and task.exception() is not None:
        logger.debug("breaker snapshot not saved: %s", task.exception())


async def _sleep_unless(stop: asyncio.Event, delay: float) -> None:
    if delay > 0:
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            return
