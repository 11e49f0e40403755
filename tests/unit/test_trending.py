"""Trending: decayed popularity overall and per category, exclusions, bounded memory."""

from __future__ import annotations

import doctest

import pytest

import models.trending
from models.trending import Decay, Trending, top_scored

HOUR = 3_600_000


def test_trending_one_half_life_later_score_is_halved() -> None:
    trending = Trending(half_life_ms=HOUR)
    trending.learn("x", None, 4.0, at_ms=0)

    assert trending.top(at_ms=HOUR) == [("x", 2.0)]
    assert trending.top(at_ms=2 * HOUR) == [("x", 1.0)]


def test_trending_recent_item_overtakes_older_heavier_one() -> None:
    trending = Trending(half_life_ms=HOUR)
    trending.learn("old", None, 3.0, at_ms=0)
    trending.learn("new", None, 2.0, at_ms=HOUR)

    assert [item for item, _ in trending.top(at_ms=HOUR)] == ["new", "old"]


def test_trending_without_half_life_counts_plainly() -> None:
    popular = Trending(half_life_ms=None)
    popular.learn("old", None, 3.0, at_ms=0)
    popular.learn("new", None, 2.0, at_ms=100 * HOUR)

    assert popular.top(at_ms=1000 * HOUR) == [("old", 3.0), ("new", 2.0)]


def test_trending_category_scope_holds_only_that_category() -> None:
    trending = Trending(half_life_ms=HOUR)
    trending.learn("boot", "shoes", 1.0, at_ms=0)
    trending.learn("bag", "bags", 5.0, at_ms=0)
    trending.learn("sandal", "shoes", 2.0, at_ms=0)

    assert trending.top(at_ms=0, category="shoes") == [("sandal", 2.0), ("boot", 1.0)]
    assert [item for item, _ in trending.top(at_ms=0)] == ["bag", "sandal", "boot"]
    assert trending.top(at_ms=0, category="hats") == []


def test_trending_top_with_exclude_skips_excluded_items() -> None:
    trending = Trending(half_life_ms=HOUR)
    for item, weight in (("a", 3.0), ("b", 2.0), ("c", 1.0)):
        trending.learn(item, None, weight, at_ms=0)

    assert trending.top(at_ms=0, n=2, exclude={"a"}) == [("b", 2.0), ("c", 1.0)]


def test_trending_ties_across_the_cut_rank_by_item_id() -> None:
    trending = Trending(half_life_ms=None)
    for item in "edcba":
        trending.learn(item, None, 1.0, at_ms=0)

    assert trending.top(at_ms=0, n=2, exclude={"a"}) == [("b", 1.0), ("c", 1.0)]


def test_trending_scope_over_capacity_keeps_strongest_within_twice_top_n() -> None:
    trending = Trending(half_life_ms=None, top_n=2)
    for rank in range(1, 10):
        trending.learn(f"i{rank}", None, float(rank), at_ms=0)

    kept = trending.top(at_ms=0, n=100)

    assert len(kept) <= 4
    assert [item for item, _ in kept[:2]] == ["i9", "i8"]


def test_trending_renormalised_scope_keeps_decayed_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models.trending, "RENORMALISE_AFTER", 2)
    trending = Trending(half_life_ms=HOUR)
    trending.learn("x", None, 8.0, at_ms=0)
    trending.learn("y", None, 1.0, at_ms=5 * HOUR)  # renormalises: x becomes 8 / 2**5

    assert trending.top(at_ms=6 * HOUR) == [("y", 0.5), ("x", 0.125)]


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_trending_invalid_weight_raises(weight: float) -> None:
    with pytest.raises(ValueError, match="weight"):
        Trending(half_life_ms=HOUR).learn("x", None, weight, at_ms=0)


def test_decay_read_before_reference_time_is_not_inflated() -> None:
    decay = Decay(half_life_ms=HOUR)

    assert decay.shrink(at_ms=0, ref_ms=10 * HOUR) == 1.0
    assert decay.growth(at_ms=0, ref_ms=HOUR) == 0.5


def test_top_scored_ties_rank_by_id() -> None:
    assert top_scored([("b", 1.0), ("c", 2.0), ("a", 1.0)], 3) == [
        ("c", 2.0),
        ("a", 1.0),
        ("b", 1.0),
    ]


def test_trending_doctests_pass() -> None:
    assert doctest.testmod(models.trending).failed == 0
