"""Time-decayed popularity ("trending"), overall and per category, learned online.

Decay without touching every counter: each group of counters (a scope here, an item's row in
`models.cooccurrence`) is stored *scaled to a reference time* `ref`. An increment `w` at event
time `t` is stored as `w * 2**((t - ref) / half_life)`, and a read at `now` divides by
`2**((now - ref) / half_life)`, which gives `sum(w_i * 2**((t_i - now) / half_life))`, the
exponentially decayed total, while an update touches only the counters it increments. Within a
group every counter shares `ref`, so the stored values already rank like the decayed ones. When
`t - ref` exceeds `RENORMALISE_AFTER` half-lives the group is renormalised (every counter is
multiplied by the pending decay and `ref` moves to `t`) so the scale stays far from float
overflow; at a 30-day half-life that happens about once in five years per group.

The same layout is what Redis would hold: one sorted set per scope (member -> scaled score)
plus its `ref`; `learn` is a ZINCRBY, `top` a ZREVRANGE and one division.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from operator import countOf, itemgetter
from types import MappingProxyType
from typing import Final

RENORMALISE_AFTER: Final = 64
"""Half-lives a group may drift from its reference time before it is renormalised (2**64 is
about 1.8e19: large enough to make renormalisation rare, tiny next to float's 1e308)."""

EVENT_WEIGHTS: Final[Mapping[str, float]] = MappingProxyType(
    {"product_view": 1.0, "add_to_cart": 3.0, "purchase": 5.0}
)
"""Default popularity weight of each event type (callers may pass their own)."""


@dataclass(frozen=True, slots=True)
class Decay:
    """Exponential decay by a half-life (`None`: no decay), for counters scaled to a `ref` time.

    >>> d = Decay(half_life_ms=1000)
    >>> d.growth(at_ms=2000, ref_ms=0), d.shrink(at_ms=1000, ref_ms=0)
    (4.0, 0.5)
    """

    half_life_ms: int | None

    def __post_init__(self) -> None:
        if self.half_life_ms is not None and self.half_life_ms <= 0:
            raise ValueError(f"half_life_ms must be positive or None, got {self.half_life_ms}")

    def growth(self, at_ms: int, ref_ms: int) -> float:
        """Multiplier storing an increment made at `at_ms` in counters scaled to `ref_ms`.

        Callers renormalise first when `stale`, so the exponent stays below
        `RENORMALISE_AFTER`; an event older than `ref_ms` gets a multiplier below one.
        """
        if self.half_life_ms is None:
            return 1.0
        return math.exp2((at_ms - ref_ms) / self.half_life_ms)

    def shrink(self, at_ms: int, ref_ms: int) -> float:
        """Multiplier turning a counter scaled to `ref_ms` into its decayed value at `at_ms`.

        A read before `ref_ms` sees the counters as of `ref_ms` (never inflated into the past),
        so the result is always in (0, 1] and cannot overflow.
        """
        if self.half_life_ms is None:
            return 1.0
        return math.exp2(-max(at_ms - ref_ms, 0) / self.half_life_ms)

    def stale(self, at_ms: int, ref_ms: int) -> bool:
        """Whether counters scaled to `ref_ms` must be renormalised before an update at `at_ms`."""
        h = self.half_life_ms
        return h is not None and at_ms - ref_ms > RENORMALISE_AFTER * h


def top_scored(scores: Iterable[tuple[str, float]], n: int) -> list[tuple[str, float]]:
    """The `n` best `(id, score)` pairs: highest score first, ties by id (deterministic).

    >>> top_scored([("b", 1.0), ("a", 1.0), ("c", 2.0)], 2)
    [('c', 2.0), ('a', 1.0)]
    """
    # sorting by id first makes the (stable) selection by score break ties by id; both C-level
    return heapq.nlargest(n, sorted(scores), key=itemgetter(1))


@dataclass(slots=True)
class _Scope:
    """One scope's scores, all scaled to `ref_ms` (in Redis: one sorted set and its `ref`)."""

    ref_ms: int
    scores: dict[str, float] = field(default_factory=dict)


class Trending:
    """Decayed popularity of items overall and per category, in bounded memory.

    Each scope (overall, and each category) keeps at most `2 * top_n` items: when it grows past
    that it is pruned to its `top_n` strongest. The slack lets a newcomer build up a score
    before the next prune, but pruning is approximate: a pruned item's history is lost, so a
    steadily rising item that keeps being pruned can be under-counted, and an item only in the
    long tail of its scope is never reported. With `half_life_ms=None` this is a plain
    "most popular so far" counter.

    >>> t = Trending(half_life_ms=3_600_000, top_n=100)
    >>> t.learn("sku-1", "shoes", 5.0, at_ms=0)
    >>> t.learn("sku-2", "bags", 3.0, at_ms=3_600_000)
    >>> t.top(at_ms=3_600_000, n=2)
    [('sku-2', 3.0), ('sku-1', 2.5)]
    >>> t.top(at_ms=3_600_000, category="shoes", exclude={"sku-2"})
    [('sku-1', 2.5)]
    """

    def __init__(self, half_life_ms: int | None, top_n: int = 1000) -> None:
        if top_n < 1:
            raise ValueError(f"top_n must be at least 1, got {top_n}")
        self._decay = Decay(half_life_ms)
        self._top_n = top_n
        self._scopes: dict[str | None, _Scope] = {}

    def learn(self, item: str, category: str | None, weight: float, at_ms: int) -> None:
        """Count `weight` (e.g. `EVENT_WEIGHTS[type]`) for `item`, overall and in `category`."""
        if not (math.isfinite(weight) and weight >= 0.0):
            raise ValueError(f"weight must be finite and non-negative, got {weight}")
        self._add(None, item, weight, at_ms)
        if category is not None:
            self._add(category, item, weight, at_ms)

    def top(
        self, at_ms: int, n: int = 10, category: str | None = None, exclude: Collection[str] = ()
    ) -> list[tuple[str, float]]:
        """The `n` most popular items at `at_ms` (overall, or in `category`), decayed scores."""
        scope = self._scopes.get(category)
        if scope is None:
            return []
        shrink = self._decay.shrink(at_ms, scope.ref_ms)
        return [(item, s * shrink) for item, s in _best(scope.scores, n, exclude)]

    def _add(self, key: str | None, item: str, weight: float, at_ms: int) -> None:
        scope = self._scopes.get(key)
        if scope is None:
            scope = self._scopes[key] = _Scope(at_ms)
        elif self._decay.stale(at_ms, scope.ref_ms):
            factor = self._decay.shrink(at_ms, scope.ref_ms)
            scope.scores = {k: v * factor for k, v in scope.scores.items()}
            scope.ref_ms = at_ms
        scores = scope.scores
        scores[item] = scores.get(item, 0.0) + weight * self._decay.growth(at_ms, scope.ref_ms)
        if len(scores) > 2 * self._top_n:
            scope.scores = dict(top_scored(scores.items(), self._top_n))


def _best(scores: dict[str, float], n: int, exclude: Collection[str]) -> list[tuple[str, float]]:
    """`top_scored` of `scores` without `exclude`, avoiding a Python-level pass over `scores`.

    The best `n + k` items (`k` excluded ones present) hold the answer, unless items tied with
    the last of them were cut off; then every item scoring at least that much is taken.
    """
    if len(exclude) > len(scores):
        return top_scored(((k, v) for k, v in scores.items() if k not in exclude), n)
    head = heapq.nlargest(n + sum(k in scores for k in exclude), scores.items(), key=itemgetter(1))
    if head and len(head) < len(scores):
        cut = head[-1][1]
        if countOf(scores.values(), cut) > countOf((v for _, v in head), cut):
            head = [(k, v) for k, v in scores.items() if v >= cut]
    return top_scored(((k, v) for k, v in head if k not in exclude), n)
