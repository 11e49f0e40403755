"""Which variant a customer gets at a decision point: sticky once exposed, else the policy's.

Shared by the API (recommendations, custom decisions) and the state consumer (webhook
triggers); the caller records a new exposure (an `experiment_exposure` event, or directly in
the journey it is folding).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from models.experiment_stats import ExperimentLedger
from models.experiments import ALL, ExperimentSpec, context_of, split
from models.state import JourneyState


class Decision(NamedTuple):
    experiment: str
    variant: str
    params: dict[str, Any]
    context: str
    new: bool  # the customer had no variant yet: record the exposure

    def public(self) -> dict[str, Any]:
        """What responses and webhook payloads carry."""
        return {"name": self.experiment, "variant": self.variant, "params": self.params}


def decide(
    name: str,
    spec: ExperimentSpec,
    customer_id: str,
    state: JourneyState | None,
    ledger: ExperimentLedger,
    initial_stage: str,
) -> Decision:
    """The customer's variant: the one they were exposed to before, or a new choice."""
    held = state.experiments.get(name) if state is not None else None
    if held is not None and held.variant in spec.variant_names:
        return Decision(name, held.variant, spec.params_of(held.variant), held.context, False)
    context = _context(spec, state, initial_stage)
    if spec.policy == "split":
        variant = split(spec, name, customer_id)
    else:
        variant = ledger.choose(name, context, spec.policy, spec.variant_names)
    return Decision(name, variant, spec.params_of(variant), context, True)


def _context(spec: ExperimentSpec, state: JourneyState | None, initial_stage: str) -> str:
    if not spec.contextual:
        return ALL
    if state is None:
        return context_of(initial_stage, None)
    scores = state.predictions or {}
    abandonment = scores.get("abandonment") if state.cart.items else None
    risk = float(abandonment["risk"]) if abandonment else None
    return context_of(state.stage, risk)
