"""The state consumer's webhook duty: which triggers the journeys emit, published before the
journeys are written.

Rules (`models.trigger_rules`) run per applied event (stage change, conversion, a cart found
abandoned by a late event), per scored journey (cart at risk) and per sweep (carts whose
deadline the watermark passed). Frequency caps are checked against, and recorded in, the
journey's `alerts`, which the same atomic write stores. Publishing comes first: a crash
before the write repeats the triggers with the same ids (receivers deduplicate by id), and
none is ever lost. Customers in the personalization holdout get no triggers; the others get
their experiment variants in the payload (`consumers.experimenting`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from aiokafka import AIOKafkaProducer

from consumers.experimenting import Experimenting
from models.events import Event
from models.labels import Sample
from models.state import CartItem, JourneyState
from models.trigger_rules import Caps, abandoned, at_risk, converted, stage_changed
from models.triggers import Trigger
from service.bus import send_all
from service.metrics import ConsumerMetrics


class Triggering:
    """Applies the trigger rules and caps, and publishes what passes; see the module docstring."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        metrics: ConsumerMetrics,
        *,
        caps: Caps,
        at_risk_threshold: float,
        timeout_s: float,
        experimenting: Experimenting | None = None,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._metrics = metrics
        self._caps = caps
        self._threshold = at_risk_threshold
        self._timeout_s = timeout_s
        self._experimenting = experimenting

    def on_event(
        self,
        state: JourneyState,
        prev_stage: str | None,
        cart_before: Mapping[str, CartItem],
        event: Event,
        digest: str,
        samples: Sequence[Sample],
    ) -> list[Trigger]:
        """Triggers caused by one applied event (`state` is the journey right after it)."""
        found = [
            stage_changed(prev_stage, state, event, digest),
            converted(cart_before, state, event, digest),
            abandoned(samples, state, cart_before) if samples else None,
        ]
        return self._admit(state, found)

    def on_scored(self, state: JourneyState, at: int) -> list[Trigger]:
        """`cart.at_risk` after fresh scores were attached to the journey."""
        return self._admit(state, [at_risk(state, at, self._threshold)])

    def on_expired(self, state: JourneyState, samples: Sequence[Sample]) -> list[Trigger]:
        """`cart.abandoned` when a sweep resolved the cart's deadline."""
        return self._admit(state, [abandoned(samples, state, state.cart.items)])

    async def publish(self, triggers: Sequence[Trigger]) -> None:
        """Make triggers durable on the triggers topic; raises `BusUnavailable` if it cannot."""
        if not triggers:
            return
        records = [(t.customer_id.encode(), t.to_json(), None) for t in triggers]
        await send_all(self._producer, self._topic, records, timeout_s=self._timeout_s)
        for kind, count in Counter(t.type for t in triggers).items():
            self._metrics.triggers.labels(kind).inc(count)

    def _admit(self, state: JourneyState, found: Sequence[Trigger | None]) -> list[Trigger]:
        """What passes the holdout and the caps, with the customer's experiment variants."""
        passed: list[Trigger] = []
        experimenting = self._experimenting
        for trigger in found:
            if trigger is None:
                continue
            if experimenting is not None and experimenting.held_out(state.customer_id):
                self._metrics.triggers_held_out.labels(trigger.type).inc()
            elif self._caps.admit(state, trigger):
                if experimenting is not None:
                    trigger = experimenting.on_trigger(state, trigger)
                passed.append(trigger)
            else:
                self._metrics.triggers_capped.labels(trigger.type).inc()
        return passed
