"""What an experiment has shown so far, and the bandits that act on it.

`ExperimentLedger` is learned by the trainer from the exposure and outcome samples the
consumers publish (exactly once, like the models) and travels in the model snapshot, so every
API process reads the same counts and pulls arms from the same bandit policies (River's
`ThompsonSampling` on a Beta reward, or `UCB`), one per experiment and context.

`report` turns the counts into figures: per variant the conversion rate over resolved
exposures, a fixed-horizon 95% Wilson interval (valid only if you look once, at a size
decided in advance), an anytime-valid 95% confidence sequence (valid however often you look:
a normal-mixture boundary for the mean of a [0, 1] outcome, Howard et al. 2021), the
posterior probability of being best (Beta(1+conversions, 1+misses) draws), and the lift over
the first variant, the control. The stopping rule uses the confidence sequences only: a
variant wins once its lower bound clears every other variant's upper bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from river import bandit, proba

from models.experiments import ALL, Outcome, unit_interval

ALPHA: Final = 0.05
Z95: Final = 1.959963984540054
CS_TUNED_FOR: Final = 1000
"""Resolved exposures per variant at which the confidence sequence is tightest."""
DRAWS: Final = 20_000


@dataclass(slots=True)
class Arm:
    """One variant's tally: exposures counted, outcomes resolved, conversions among them."""

    exposures: int = 0
    resolved: int = 0
    conversions: int = 0

    @property
    def rate(self) -> float | None:
        return self.conversions / self.resolved if self.resolved else None


def _policy(kind: str, seed: int) -> bandit.base.Policy:
    if kind == "ucb":
        return bandit.UCB(delta=1.0, seed=seed)
    return bandit.ThompsonSampling(reward_obj=proba.Beta(), seed=seed)


@dataclass
class ExperimentLedger:
    """Counts per experiment and variant (and per context), and the bandit policies."""

    arms: dict[str, dict[str, Arm]] = field(default_factory=dict)
    by_context: dict[str, dict[str, dict[str, Arm]]] = field(default_factory=dict)
    policies: dict[tuple[str, str, str], bandit.base.Policy] = field(default_factory=dict)

    def learn(self, outcome: Outcome) -> None:
        """Count an exposure (`converted` None) or an outcome, and reward the bandits."""
        for arm in self._arms(outcome):
            if outcome.converted is None:
                arm.exposures += 1
            else:
                arm.resolved += 1
                arm.conversions += outcome.converted
        if outcome.converted is not None:
            for kind in ("thompson", "ucb"):
                policy = self.policy(outcome.experiment, outcome.context, kind)
                policy.update(outcome.variant, float(outcome.converted))  # type: ignore[no-untyped-call]

    def policy(self, experiment: str, context: str, kind: str) -> bandit.base.Policy:
        """The bandit for one experiment and context (created untrained on first use)."""
        key = (experiment, context, kind)
        found = self.policies.get(key)
        if found is None:
            seed = int(unit_interval(f"{context}|{kind}", experiment) * 2**32)
            found = self.policies[key] = _policy(kind, seed)
        return found

    def choose(self, experiment: str, context: str, kind: str, variants: list[str]) -> str:
        """Pull an arm. Before any outcome, Thompson draws uniformly; UCB ties break at random."""
        arms: list[int | str] = list(variants)
        return str(self.policy(experiment, context, kind).pull(arms))

    def tally(self, experiment: str) -> dict[str, Arm]:
        return self.arms.get(experiment, {})

    def _arms(self, outcome: Outcome) -> list[Arm]:
        arms = [self.arms.setdefault(outcome.experiment, {}).setdefault(outcome.variant, Arm())]
        if outcome.context != ALL:
            contexts = self.by_context.setdefault(outcome.experiment, {})
            arms.append(contexts.setdefault(outcome.context, {}).setdefault(outcome.variant, Arm()))
        return arms


def wilson(conversions: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval for a proportion (fixed horizon)."""
    if n == 0:
        return None
    p = conversions / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def confidence_sequence(
    conversions: int, n: int, alpha: float = ALPHA, tuned_for: int = CS_TUNED_FOR
) -> tuple[float, float]:
    """An interval that holds at every n at once with probability 1 - alpha.

    A [0, 1] outcome is 1/2-sub-Gaussian; with intrinsic time v = n/4 the normal-mixture
    boundary is sqrt((v + rho) log((v + rho) / (rho alpha^2))) on the centred sum.
    """
    if n == 0:
        return 0.0, 1.0
    v_star = tuned_for / 4
    log_term = 2 * math.log(1 / alpha)
    rho = v_star / (log_term + math.log(1 + log_term))
    v = n / 4
    radius = math.sqrt((v + rho) * math.log((v + rho) / (rho * alpha * alpha))) / n
    p = conversions / n
    return max(0.0, p - radius), min(1.0, p + radius)


def probability_best(arms: dict[str, Arm], seed: int = 7) -> dict[str, float]:
    """P(variant has the highest rate) under independent Beta(1 + c, 1 + n - c) posteriors."""
    if not arms:
        return {}
    names = list(arms)
    rng = np.random.default_rng(seed)
    draws = np.stack(
        [
            rng.beta(1 + a.conversions, 1 + a.resolved - a.conversions, size=DRAWS)
            for a in arms.values()
        ]
    )
    wins = np.bincount(draws.argmax(axis=0), minlength=len(names))
    return {name: round(float(w) / DRAWS, 4) for name, w in zip(names, wins, strict=True)}


def winner(arms: dict[str, Arm], alpha: float = ALPHA) -> str | None:
    """The variant whose anytime-valid lower bound clears every other's upper bound.

    Each sequence is taken at alpha / k (k variants), so the rule's error stays under alpha
    however often it is checked.
    """
    if len(arms) < 2:
        return None
    level = alpha / len(arms)
    bounds = {v: confidence_sequence(a.conversions, a.resolved, level) for v, a in arms.items()}
    for name, (low, _) in bounds.items():
        if all(low > high for other, (_, high) in bounds.items() if other != name):
            return name
    return None


def report(
    variants: list[str], arms: dict[str, Arm], *, bandit_policy: bool, control: bool = True
) -> dict[str, Any]:
    """The figures `GET /v1/experiments/{name}` shows; variants in definition order, the
    first the control (`control` False: none is known, so no lift is given)."""
    arms = {v: arms.get(v, Arm()) for v in variants}
    baseline = arms[variants[0]] if variants else Arm()
    best = probability_best(arms)
    rows = []
    for name, arm in arms.items():
        rate = arm.rate
        fixed = wilson(arm.conversions, arm.resolved)
        low, high = confidence_sequence(arm.conversions, arm.resolved, ALPHA / len(arms))
        lift = None
        if control and name != variants[0] and rate is not None and baseline.rate:
            lift = round(rate / baseline.rate - 1, 6)
        rows.append(
            {
                "variant": name,
                "exposures": arm.exposures,
                "resolved": arm.resolved,
                "conversions": arm.conversions,
                "pending": max(0, arm.exposures - arm.resolved),
                "conversion_rate": round(rate, 6) if rate is not None else None,
                "ci95": [round(b, 6) for b in fixed] if fixed else None,
                "anytime_ci95": [round(low, 6), round(high, 6)],
                "probability_best": best.get(name),
                "lift_vs_control": lift,
            }
        )
    total = sum(a.exposures for a in arms.values())
    return {
        "variants": rows,
        "exposures": total,
        "traffic_share": {
            v: round(a.exposures / total, 6) if total else None for v, a in arms.items()
        },
        "winner": winner(arms),
        "bandit": bandit_policy,
    }
