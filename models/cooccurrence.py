"""Frequently bought together: item-to-item co-occurrence learned online from baskets.

A basket is the set of products of one order, or the products added to cart in one session,
learned whole (`learn_basket`) or one addition at a time as a cart fills (`learn_addition`).
For every item `a` the model keeps `n(a)`, the decayed number of baskets holding `a`, and
`c(a, b)`, the decayed number holding both `a` and `b`, for at most `top_k` neighbours `b`.
Both decay exponentially in event time (half-life), so last season's pairs fade.

Scores are normalised so that globally popular items do not win everywhere:
`cosine(a, b) = c(a, b) / sqrt(n(a) * n(b))` (in [0, 1]) or
`lift(a, b) = c(a, b) * N / (n(a) * n(b))` with `N` the decayed number of baskets (above 1:
bought together more often than chance). Pairs with `c(a, b) < min_support` are not scored.

Each item's counters are scaled to that item's own reference time (the trick is described in
`models.trending`), so learning a basket is, for each item `a` in it, independently:
"renormalise `a` if stale; add `2**((t - ref_a) / half_life)` to `n(a)` and to `c(a, b)` for
every other `b`; prune `a` to `top_k` neighbours". That is one Redis hash (`ref`, `n`) and one
sorted set (neighbour -> scaled `c`) per item, each updated without reading any other item.

Pruning is approximate: when `a` has more than `top_k` neighbours the weakest by decayed pair
count are dropped (ties: the greater id goes first, as in every ranking here), and a dropped
pair's history is lost. A pair that later becomes frequent starts again from zero, and
`c(a, b)` and `c(b, a)` can differ when only one side was pruned. `n(a)` itself is never pruned.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from models.trending import Decay, top_scored

Measure = Literal["cosine", "lift"]

FORGOTTEN: Final = 1e-9
"""Decayed pair counts below this are treated as zero (keeps every ratio finite)."""


@dataclass(slots=True)
class _Row:
    """One item's counters, scaled to `ref_ms`: `count` is `n(item)`, `pairs[b]` is `c(item, b)`."""

    ref_ms: int
    count: float = 0.0
    pairs: dict[str, float] = field(default_factory=dict)

    def renormalise(self, factor: float, at_ms: int) -> None:
        """Apply the decay pending since `ref_ms` (`factor`) and make `at_ms` the reference."""
        self.count *= factor
        self.pairs = {other: c * factor for other, c in self.pairs.items()}
        self.ref_ms = at_ms


class CoOccurrence:
    """Decayed item-to-item co-occurrence with top-K neighbours per item.

    >>> model = CoOccurrence(half_life_ms=30 * 86_400_000, min_support=1.0)
    >>> for basket in (["pasta", "sauce"], ["pasta", "sauce", "milk"], ["milk", "bread"]):
    ...     model.learn_basket(basket, at_ms=0)
    >>> model.neighbours("pasta", at_ms=0)
    [('sauce', 1.0), ('milk', 0.5)]
    >>> model.recommend(["pasta"], at_ms=0, exclude={"sauce"})
    [('milk', 0.5, 'pasta')]
    """

    def __init__(
        self,
        *,
        half_life_ms: int,
        top_k: int = 50,
        min_support: float = 2.0,
        max_basket: int = 50,
        measure: Measure = "cosine",
    ) -> None:
        if top_k < 1 or max_basket < 2 or not min_support >= 0.0:
            raise ValueError("need top_k >= 1, max_basket >= 2 and min_support >= 0")
        if measure not in ("cosine", "lift"):
            raise ValueError(f"measure must be 'cosine' or 'lift', got {measure!r}")
        self._decay = Decay(half_life_ms)
        self._top_k = top_k
        self._min_support = max(min_support, FORGOTTEN)
        self._max_basket = max_basket
        self._measure = measure
        self._rows: dict[str, _Row] = {}
        self._baskets = _Row(ref_ms=0)

    def __len__(self) -> int:
        """Number of items with counters."""
        return len(self._rows)

    def learn_basket(self, items: Sequence[str], at_ms: int) -> None:
        """Count one basket bought (or carted) at `at_ms`.

        Duplicates are counted once; only the first `max_basket` distinct items are used
        (pairs grow quadratically, and very large baskets say little about any one pair).
        """
        basket = list(dict.fromkeys(items))[: self._max_basket]
        if not basket:
            return
        self._bump(self._baskets, at_ms)
        for item in basket:
            self._learn_row(item, basket, at_ms)

    def learn_addition(self, added: Sequence[str], existing: Sequence[str], at_ms: int) -> None:
        """Count `added` joining a basket that already holds (and counted) `existing`.

        Each added item `a` gets `n(a) += 1` and `c(a, x) += 1` for every other `x` in the
        basket; each existing item `b` gets `c(b, a) += 1` but keeps `n(b)`. Building a basket
        one item at a time therefore counts it as `learn_basket` of the whole basket would
        (at one event time). An item arriving with `existing` empty starts a basket. An
        existing item never counted has no row and gets no pair (nothing to normalise it by).
        A pair counted after its item (added later to the cart) has decayed less than the
        item's count, so its cosine can exceed 1 by the decay between the two additions.

        >>> model = CoOccurrence(half_life_ms=86_400_000, min_support=1.0)
        >>> model.learn_addition(["pasta"], [], at_ms=0)
        >>> model.learn_addition(["sauce"], ["pasta"], at_ms=0)
        >>> model.neighbours("pasta", at_ms=0)
        [('sauce', 1.0)]
        """
        new, old = split_addition(added, existing, self._max_basket)
        if not new:
            return
        if not old:
            self._bump(self._baskets, at_ms)
        basket = new + old
        for item in new:
            self._learn_row(item, basket, at_ms)
        for item in old:
            row = self._rows.get(item)
            if row is not None:
                self._add_pairs(row, new, item, self._scale(row, at_ms))

    def _learn_row(self, item: str, basket: Sequence[str], at_ms: int) -> None:
        """Count one basket holding `item` in `item`'s row: `n(item)` and its pairs."""
        row = self._rows.get(item)
        if row is None:
            row = self._rows[item] = _Row(ref_ms=at_ms)
        self._add_pairs(row, basket, item, self._bump(row, at_ms))

    def _add_pairs(self, row: _Row, others: Sequence[str], item: str, step: float) -> None:
        """Add `step` to `row`'s pair with each of `others` but `item`, then prune the row."""
        pairs = row.pairs
        for other in others:
            if other != item:
                pairs[other] = pairs.get(other, 0.0) + step
        if len(pairs) > self._top_k:
            # keep the strongest; same order as every ranking here (ties: smaller id)
            row.pairs = dict(top_scored(pairs.items(), self._top_k))

    def neighbours(self, item: str, at_ms: int, n: int = 10) -> list[tuple[str, float]]:
        """The `n` items most often bought with `item`, by normalised score, best first."""
        return top_scored(self._scores(item, at_ms, {}).items(), n)

    def recommend(
        self, seeds: Sequence[str], at_ms: int, *, exclude: Collection[str] = (), n: int = 10
    ) -> list[tuple[str, float, str]]:
        """Items to suggest next to `seeds`, as `(item, score, seed that suggested it)`.

        An item's score is the sum of its scores against every seed (an item that goes with
        several seeds ranks higher); the credited seed is its strongest contributor (first
        seed on ties). Seeds and `exclude` are never returned.
        """
        unique = list(dict.fromkeys(seeds))
        banned = set(unique).union(exclude)
        totals: dict[str, float] = {}
        credit: dict[str, tuple[float, str]] = {}
        counts: dict[str, float] = {}
        for seed in unique:
            for item, score in self._scores(seed, at_ms, counts).items():
                if item in banned:
                    continue
                totals[item] = totals.get(item, 0.0) + score
                if item not in credit or score > credit[item][0]:
                    credit[item] = (score, seed)
        return [(item, s, credit[item][1]) for item, s in top_scored(totals.items(), n)]

    def _bump(self, row: _Row, at_ms: int) -> float:
        """Add one basket to `row.count`; the scaled step, for the row's pair counts too."""
        step = self._scale(row, at_ms)
        row.count += step
        return step

    def _scale(self, row: _Row, at_ms: int) -> float:
        """What one count at `at_ms` adds to `row`, renormalising the row first if stale."""
        if self._decay.stale(at_ms, row.ref_ms):
            row.renormalise(self._decay.shrink(at_ms, row.ref_ms), at_ms)
        return self._decay.growth(at_ms, row.ref_ms)

    def _decayed(self, item: str, at_ms: int, counts: dict[str, float]) -> float:
        """`n(item)` at `at_ms`, memoised in `counts` (one read serves every seed)."""
        count = counts.get(item)
        if count is None:
            row = self._rows.get(item)
            count = 0.0 if row is None else row.count * self._decay.shrink(at_ms, row.ref_ms)
            counts[item] = count
        return count

    def _scores(self, item: str, at_ms: int, counts: dict[str, float]) -> dict[str, float]:
        """Normalised scores of `item`'s neighbours with enough decayed support."""
        row = self._rows.get(item)
        if row is None:
            return {}
        shrink = self._decay.shrink(at_ms, row.ref_ms)
        n_a = row.count * shrink
        if n_a < FORGOTTEN:
            return {}
        total = self._baskets.count * self._decay.shrink(at_ms, self._baskets.ref_ms)
        cosine = self._measure == "cosine"
        scores: dict[str, float] = {}
        for other, scaled in row.pairs.items():
            pair = scaled * shrink
            if pair < self._min_support:
                continue
            n_b = self._decayed(other, at_ms, counts)
            if n_b < FORGOTTEN:
                continue
            if cosine:
                scores[other] = pair / math.sqrt(n_a * n_b)
            else:
                scores[other] = (pair / n_a) * (total / n_b)
        return scores


def split_addition(
    added: Sequence[str], existing: Sequence[str], max_basket: int
) -> tuple[list[str], list[str]]:
    """`learn_addition`'s basket: distinct added items, then distinct existing ones not added,
    cut to `max_basket` items in all.

    >>> split_addition(["a", "a", "b"], ["b", "c", "d"], max_basket=3)
    (['a', 'b'], ['c'])
    """
    new = list(dict.fromkeys(added))[:max_basket]
    fresh = set(new)
    old = [b for b in dict.fromkeys(existing) if b not in fresh]
    del old[max_basket - len(new) :]
    return new, old
