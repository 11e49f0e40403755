"""Decisions made in the API and the exposures they are recorded as.

A customer's first decision in an experiment becomes an `experiment_exposure` event on the
events topic, keyed by customer like every event, so the state consumer folds it into the
journey (which keeps the variant from then on) and opens its outcome window. The event id is
derived from the experiment and the customer, so repeating it (two requests before the first
is folded, a retry) is recognised as one exposure; the first one folded wins. A decision whose
exposure the broker did not acknowledge is not shown: the caller serves the action without it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

from models.decisions import Decision
from models.events import EXPOSURE_TYPE, Event, EventProperties, Exposure
from models.experiments import in_holdout
from models.state import JourneyState
from service.bus import EventPublisher
from service.experiments import ExperimentBook
from service.metrics import ApiMetrics
from service.scoring import LiveScorer


class Exposed(NamedTuple):
    """A new decision to record: for whom, when (event time, ms) and on which channel."""

    customer_id: str
    decision: Decision
    at_ms: int
    channel: str


class Exposures:
    """Decides for the API and records first exposures; see the module docstring."""

    def __init__(
        self,
        book: ExperimentBook,
        publisher: EventPublisher,
        scorer: LiveScorer,
        metrics: ApiMetrics,
        *,
        holdout: float,
    ) -> None:
        self.book = book
        self._publisher = publisher
        self._scorer = scorer
        self._metrics = metrics
        self.holdout = holdout

    def held_out(self, customer_id: str) -> bool:
        return in_holdout(customer_id, self.holdout)

    def eligible(self, customer_id: str, state: JourneyState | None) -> bool:
        """Not in the holdout and not opted out (an unknown customer is eligible)."""
        opted_out = state is not None and not state.personalization
        return not opted_out and not self.held_out(customer_id)

    def decide(self, point: str, customer_id: str, state: JourneyState | None) -> list[Decision]:
        """The customer's variants at `point`, from the served snapshot's bandits."""
        return self.book.decide(point, customer_id, state, self._scorer.training.experiments)

    def decide_in(self, name: str, customer_id: str, state: JourneyState | None) -> Decision | None:
        """The customer's variant in experiment `name` alone (a custom decision)."""
        return self.book.decide_in(name, customer_id, state, self._scorer.training.experiments)

    async def record(self, exposed: Sequence[Exposed]) -> set[tuple[str, str]]:
        """Publish the new exposures; returns the (customer, experiment) pairs that failed."""
        events: dict[str, tuple[Exposed, Event]] = {}
        for item in exposed:
            spec = self.book.spec(item.decision.experiment)
            if spec is None:
                continue
            event = exposure_event(item, spec.success, spec.window_s)
            events.setdefault(event.event_id, (item, event))
        if not events:
            return set()
        published = await self._publisher.publish([e for _, e in events.values()])
        failed = set(published.failed)
        for event_id, (item, _) in events.items():
            outcome = "failed" if event_id in failed else "recorded"
            self._metrics.exposures.labels(item.decision.experiment, outcome).inc()
        return {
            (item.customer_id, item.decision.experiment)
            for event_id, (item, _) in events.items()
            if event_id in failed
        }


def exposure_event(item: Exposed, success: Sequence[str], window_s: int) -> Event:
    """The `experiment_exposure` event of a first decision."""
    d = item.decision
    digest = hashlib.blake2b(
        f"{d.experiment}\x00{item.customer_id}".encode(), digest_size=16
    ).hexdigest()
    return Event(
        event_id=f"exposure-{digest}",
        customer_id=item.customer_id,
        type=EXPOSURE_TYPE,
        channel=item.channel,
        timestamp=datetime.fromtimestamp(item.at_ms / 1000, UTC),
        properties=EventProperties(
            exposure=Exposure(
                experiment=d.experiment,
                variant=d.variant,
                success=list(success),
                window_s=window_s,
                context=d.context,
            )
        ),
    )
