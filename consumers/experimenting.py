"""The state consumer's experiment duty: exposures made here, outcomes resolved here.

Webhook triggers are decided here, where the journey is at hand: each active experiment at
`webhook:<trigger type>` gives the customer their variant (sticky once recorded in the
journey), the trigger's payload carries it and the exposure goes into the journey in the same
atomic write. Exposures made by the API arrive as `experiment_exposure` events, which the
fold records the same way. A customer's first event puts them in the holdout comparison.

Every applied event can convert an open exposure; the watermark sweep closes the windows
that ended (`models.experiments`). Exposures and outcomes leave as samples, published before
the journey write like the labels, for the trainer's `ExperimentLedger`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from models.experiment_stats import ExperimentLedger
from models.experiments import (
    HOLDOUT,
    HOLDOUT_VARIANTS,
    Outcome,
    announce,
    expire,
    expose,
    in_holdout,
    resolve,
)
from models.labels import Sample, experiment_sample
from models.state import JourneyState
from models.triggers import Trigger
from service.experiments import ExperimentBook
from service.metrics import ConsumerMetrics


class Experimenting:
    """See the module docstring."""

    def __init__(
        self,
        book: ExperimentBook,
        ledger: Callable[[], ExperimentLedger],
        metrics: ConsumerMetrics,
        *,
        holdout: float,
        holdout_window_ms: int,
        holdout_success: Sequence[str],
    ) -> None:
        self.book = book
        self._ledger = ledger
        self._metrics = metrics
        self.holdout = holdout
        self._holdout_window_ms = holdout_window_ms
        self._holdout_success = tuple(holdout_success)

    async def refresh(self) -> None:
        await self.book.refresh()

    def held_out(self, customer_id: str) -> bool:
        """Whether the customer gets no personalization (no triggers, in particular)."""
        return in_holdout(customer_id, self.holdout)

    def on_event(self, state: JourneyState, started: bool, event_type: str, t: int) -> list[Sample]:
        """After the fold applied an event: a new journey enters the holdout comparison, then
        the outcomes the event decides (a conversion, or a window ended)."""
        if started and self.holdout > 0:
            held = self.held_out(state.customer_id)
            expose(
                state.experiments,
                HOLDOUT,
                HOLDOUT_VARIANTS[1] if held else HOLDOUT_VARIANTS[0],
                t,
                window_ms=self._holdout_window_ms,
                success=self._holdout_success,
            )
        return self._samples(state, resolve(state.experiments, event_type, t))

    def on_trigger(self, state: JourneyState, trigger: Trigger) -> Trigger:
        """The trigger with the customer's variants at `webhook:<type>` in its payload."""
        decisions = self.book.decide(
            f"webhook:{trigger.type}", state.customer_id, state, self._ledger()
        )
        if not decisions:
            return trigger
        for d in decisions:
            spec = self.book.spec(d.experiment)
            if d.new and spec is not None:
                expose(
                    state.experiments,
                    d.experiment,
                    d.variant,
                    trigger.at,
                    window_ms=spec.window_s * 1000,
                    success=spec.success,
                    context=d.context,
                )
            self._metrics.experiment_decisions.labels(d.experiment, d.variant).inc()
        payload = {**trigger.payload, "experiments": [d.public() for d in decisions]}
        return replace(trigger, payload=payload)

    def announce(self, state: JourneyState) -> list[Sample]:
        """The journey's exposures not yet counted, as samples (each counted once)."""
        return self._samples(state, announce(state.experiments))

    def expire(self, state: JourneyState, until_ms: int) -> list[Sample]:
        """Close the windows that ended before `until_ms`, and announce what was not yet."""
        return self._samples(
            state, [*announce(state.experiments), *expire(state.experiments, until_ms)]
        )

    def _samples(self, state: JourneyState, outcomes: Sequence[Outcome]) -> list[Sample]:
        return [experiment_sample(o, state) for o in outcomes]
