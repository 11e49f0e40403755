"""The state consumer's analytics duty: a fact per applied event, recorded once per chunk.

Facts come from the journey just before and just after each event (`models.analytics`).
A fact whose deadlines the customer's next event may pass, and each customer's last fact of
the chunk, carry the journey as it stood then (`Leaving`), which an exit or an abandoned cart
is counted from. A chunk's facts are recorded in one fenced script call before its journeys
are written (chunks in log order): a crash in between repeats the call on redelivery, and the
per-partition offset fence makes the repeat a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable

from models.analytics import Before, Fact, Recorder
from models.events import Event
from models.journeymap import JourneyMap
from models.state import JourneyState
from service.analytics import AnalyticsStore, CustomerFacts, analytics_store
from service.metrics import ConsumerMetrics
from service.settings import Settings
from service.store import RedisClient


class AnalyticsRecording:
    """Facts per event, recorded per batch; see the module docstring."""

    def __init__(self, store: AnalyticsStore, recorder: Recorder, metrics: ConsumerMetrics) -> None:
        self._store = store
        self._recorder = recorder
        self._metrics = metrics
        self._backlog: set[int] = set()

    def before(self, facts: list[Fact], state: JourneyState | None, event: Event) -> Before | None:
        """Call before the fold applies `event` to `state` (it changes it in place).

        If `event` may pass the deadlines of the customer's previous fact, that fact gets the
        journey as it stands now, which is as its event left it.
        """
        if state is None:
            return None
        if facts and facts[-1].leaving is None and facts[-1].may_resolve_at(event.timestamp_ms):
            facts[-1].leaving = self._recorder.leaving(state)
        return Before.of(state)

    def observe(
        self,
        facts: list[Fact],
        before: Before | None,
        state: JourneyState,
        event: Event,
        partition: int,
        offset: int,
    ) -> None:
        """Record the fact of an event the fold applied; `before` is what `before()` gave."""
        facts.append(self._recorder.fact(before, state, event, partition, offset))

    def finish(self, facts: list[Fact], state: JourneyState | None) -> None:
        """After the customer's last event of the batch: their last fact gets the journey."""
        if facts and facts[-1].leaving is None and state is not None:
            facts[-1].leaving = self._recorder.leaving(state)

    async def record(self, customers: Iterable[tuple[str, list[Fact]]]) -> None:
        """Count the batch's facts exactly once; raises `StoreUnavailable` if Redis cannot."""
        batch = [CustomerFacts(customer, facts) for customer, facts in customers if facts]
        if not batch and not self._backlog:
            return
        sweep, self._backlog = self._backlog, set()  # taken by this call, not by concurrent ones
        try:
            done = await self._store.record(self._recorder.map.name, batch, sweep=sweep)
        except BaseException:
            self._backlog |= sweep
            raise
        self._backlog |= set(done.backlog)
        metrics = self._metrics
        metrics.analytics_facts.inc(done.facts)
        if done.exits:
            metrics.analytics_resolved.labels("exit").inc(done.exits)
        if done.abandoned_carts:
            metrics.analytics_resolved.labels("abandoned_cart").inc(done.abandoned_carts)

    async def idle(self) -> None:
        """Between polls: resolve what the last batches left due beyond one call's share.
        A Redis failure raises `StoreUnavailable`; the runner backs off and polls again."""
        if self._backlog:
            await self.record(())

    def forget(self, partitions: Iterable[int]) -> None:
        """Leave the backlog of partitions this process no longer owns to their new owner."""
        self._backlog.difference_update(partitions)


def analytics_recording(
    settings: Settings,
    redis: RedisClient,
    metrics: ConsumerMetrics,
    journey_map: JourneyMap,
    kind: type[AnalyticsRecording] = AnalyticsRecording,
) -> AnalyticsRecording:
    """The duty as settings configure it (as `kind`, a subclass when a test makes it fail);
    a cart is abandoned as the abandonment model says."""
    recorder = Recorder(
        journey_map,
        horizon_ms=int(settings.analytics.horizon_s * 1000),
        abandon_after_ms=int(settings.models.abandon_after_s * 1000),
        touchpoints=settings.analytics.touchpoints,
    )
    store = analytics_store(redis, settings)
    return kind(store, recorder, metrics)
