"""Touchpoints whose exit or loop rate jumped against their own recent baseline (pure).

A touchpoint's exit rate is, of the customers whose last touchpoints included it and who then
either exited (`x|`) or moved on (`p|`), the share who exited; its loop rate the same with
moves back to an earlier stage (`k|`) in place of exits. Both come from the hourly touchpoint
counters `models.analytics` defines.

For each touchpoint, the baseline rate is its rate over the baseline hours. The change, if
any, is the most likely single step up at the end of the series: the start `s` among the
recent hours that maximizes the log-likelihood ratio of "the rate from `s` on is its own"
against "it is the baseline's" (binomial counts; the classic single change-point estimate).
It is reported when, from `s` on, the touchpoint preceded at least `min_count` outcomes, its
rate is at least `min_increase` above the baseline, and the rise is `z_min` standard errors
or more (the baseline taken as known). A touchpoint without `min_count` outcomes in the
baseline has no baseline of its own and is not judged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

Kind = Literal["exit", "loop"]
OUTCOME: Final[Mapping[Kind, str]] = {"exit": "x|", "loop": "k|"}
PROGRESS: Final = "p|"


@dataclass(frozen=True, slots=True)
class Rule:
    """When a rise is reported; see the module docstring."""

    min_count: int = 20
    min_increase: float = 0.1
    z_min: float = 4.0


@dataclass(frozen=True, slots=True)
class Change:
    kind: Kind
    touch: str
    """`type|channel|target`"""
    started: int
    """Start (ms) of the first hour of the raised rate."""
    baseline_rate: float
    rate: float
    customers: int
    """Outcomes (exits or loops) after the touchpoint since `started`."""
    seen: int
    """Outcomes of either kind (the rate's denominator) since `started`."""
    z: float


def _loglik(hits: int, total: int, p: float) -> float:
    """The binomial log-likelihood of `hits` in `total` at rate `p` (without the constant)."""
    out = 0.0
    if hits:
        out += hits * math.log(p) if p > 0 else -math.inf
    if total - hits:
        out += (total - hits) * math.log(1 - p) if p < 1 else -math.inf
    return out


def _judge(
    kind: Kind,
    touch: str,
    baseline: tuple[int, int],
    recent: Sequence[tuple[int, int, int]],
    rule: Rule,
) -> Change | None:
    """`baseline` (hits, total); `recent` (hour start, hits, total) oldest first."""
    base_hits, base_total = baseline
    if base_total < rule.min_count:
        return None
    p0 = (base_hits + 0.5) / (base_total + 1)  # never 0 or 1: every rate stays comparable
    best: tuple[float, int, int, int] | None = None
    hits = total = 0
    for start, h, n in reversed(recent):
        hits, total = hits + h, total + n
        if total < rule.min_count or n == 0:
            continue
        p1 = hits / total
        if p1 < p0 + rule.min_increase:
            continue
        score = _loglik(hits, total, p1) - _loglik(hits, total, p0)
        if best is None or score > best[0]:
            best = (score, start, hits, total)
    if best is None:
        return None
    _, start, hits, total = best
    rate = hits / total
    z = (rate - p0) / math.sqrt(p0 * (1 - p0) / total)
    if z < rule.z_min:
        return None
    return Change(kind, touch, start, base_hits / base_total, rate, hits, total, z)


def changes(
    kind: Kind,
    baseline: Mapping[str, int],
    recent: Sequence[tuple[int, Mapping[str, int]]],
    rule: Rule,
) -> list[Change]:
    """Touchpoints whose `kind` rate rose, largest rise (in standard errors) first.

    `baseline`: touchpoint counters summed over the baseline hours; `recent`: (hour start,
    counters) for each recent hour, oldest first, none of them in the baseline.
    """
    outcome = OUTCOME[kind]
    touches = {name[2:] for _, fields in recent for name in fields if name.startswith(outcome)}
    found = []
    for touch in touches:
        base_hits = baseline.get(outcome + touch, 0)
        base_total = base_hits + baseline.get(PROGRESS + touch, 0)
        series = []
        for start, fields in recent:
            h = fields.get(outcome + touch, 0)
            series.append((start, h, h + fields.get(PROGRESS + touch, 0)))
        change = _judge(kind, touch, (base_hits, base_total), series, rule)
        if change is not None:
            found.append(change)
    found.sort(key=lambda c: (-c.z, c.touch))
    return found
