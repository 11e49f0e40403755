"""Co-occurrence ("frequently bought together"): decay, pruning, normalisation, exclusions."""

from __future__ import annotations

import doctest
import math
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import models.cooccurrence
import models.trending
from models.cooccurrence import CoOccurrence, Measure

HOUR = 3_600_000


def model(**overrides: object) -> CoOccurrence:
    options: dict[str, object] = {"half_life_ms": HOUR, "min_support": 0.0}
    options.update(overrides)
    return CoOccurrence(**options)  # type: ignore[arg-type]


def names(pairs: list[tuple[str, float]]) -> list[str]:
    return [item for item, _ in pairs]


def test_cooccurrence_one_half_life_later_pair_count_is_halved() -> None:
    cooc = model(min_support=2.0)
    for _ in range(4):
        cooc.learn_basket(["a", "b"], at_ms=0)

    # c(a, b) is 4 at t=0, exactly 2 one half-life later, and just below 2 right after
    assert names(cooc.neighbours("a", at_ms=HOUR)) == ["b"]
    assert cooc.neighbours("a", at_ms=HOUR + 1) == []


def test_cooccurrence_older_pair_decays_relative_to_newer_pair() -> None:
    cooc = model()
    cooc.learn_basket(["a", "b"], at_ms=0)
    cooc.learn_basket(["a", "c"], at_ms=HOUR)

    scores = dict(cooc.neighbours("a", at_ms=HOUR))

    # n(a) = 1.5, c(a,b) = n(b) = 0.5, c(a,c) = n(c) = 1 (without decay both would be 1/sqrt 2)
    assert scores["b"] == pytest.approx(0.5 / math.sqrt(1.5 * 0.5))
    assert scores["c"] == pytest.approx(1.0 / math.sqrt(1.5 * 1.0))


def test_cooccurrence_more_than_k_neighbours_keeps_k_strongest() -> None:
    cooc = model(top_k=3)
    for other, times in (("b1", 5), ("b2", 4), ("b3", 3), ("b4", 2), ("b5", 1)):
        for _ in range(times):
            cooc.learn_basket(["a", other], at_ms=0)

    assert sorted(names(cooc.neighbours("a", at_ms=0, n=100))) == ["b1", "b2", "b3"]


def test_cooccurrence_pruned_item_with_recent_pairs_displaces_faded_one() -> None:
    cooc = model(top_k=2)
    for other, times in (("b1", 3), ("b2", 2)):
        for _ in range(times):
            cooc.learn_basket(["a", other], at_ms=0)
    for _ in range(2):
        cooc.learn_basket(["a", "new"], at_ms=10 * HOUR)

    # 2 recent co-occurrences outweigh 2 from ten half-lives ago: b2 goes, `new` stays
    assert sorted(names(cooc.neighbours("a", at_ms=10 * HOUR, n=100))) == ["b1", "new"]


@pytest.mark.parametrize("measure", ["cosine", "lift"])
def test_cooccurrence_normalised_score_prefers_complement_over_popular_item(
    measure: Measure,
) -> None:
    cooc = model(measure=measure, min_support=2.0)
    for _ in range(3):
        cooc.learn_basket(["pasta", "milk"], at_ms=0)
    for _ in range(2):
        cooc.learn_basket(["pasta", "sauce"], at_ms=0)
    for i in range(20):
        cooc.learn_basket(["milk", f"x{i}"], at_ms=0)

    # raw counts would rank milk first (c = 3 against 2); milk is in 23 baskets, sauce in 2
    assert names(cooc.neighbours("pasta", at_ms=0)) == ["sauce", "milk"]


def test_cooccurrence_pair_below_min_support_is_not_scored() -> None:
    cooc = model(min_support=2.0)
    cooc.learn_basket(["a", "b"], at_ms=0)
    cooc.learn_basket(["a", "c"], at_ms=0)
    cooc.learn_basket(["a", "c"], at_ms=0)

    assert names(cooc.neighbours("a", at_ms=0)) == ["c"]
    [(item, score, seed)] = cooc.recommend(["a"], at_ms=0)
    assert (item, seed) == ("c", "a")
    assert score == pytest.approx(2 / math.sqrt(3 * 2))


def test_cooccurrence_recommend_with_exclude_skips_excluded_items() -> None:
    cooc = model()
    cooc.learn_basket(["a", "b", "c"], at_ms=0)

    assert [item for item, _, _ in cooc.recommend(["a"], at_ms=0, exclude={"c"})] == ["b"]


def test_cooccurrence_recommend_never_returns_seeds() -> None:
    cooc = model()
    cooc.learn_basket(["a", "b", "c"], at_ms=0)
    cooc.learn_basket(["a", "b"], at_ms=0)

    recs = cooc.recommend(["a", "b"], at_ms=0)

    assert [item for item, _, _ in recs] == ["c"]
    assert recs[0][2] in ("a", "b")


def test_cooccurrence_item_bought_with_several_seeds_ranks_first() -> None:
    cooc = model()
    cooc.learn_basket(["a", "both", "only-a"], at_ms=0)
    cooc.learn_basket(["b", "both"], at_ms=0)
    cooc.learn_basket(["b", "both"], at_ms=0)

    recs = cooc.recommend(["a", "b"], at_ms=0)

    # both: 1/sqrt(1*3) from a plus 2/sqrt(2*3) from b = 1.39, against only-a: 1/sqrt(1*1)
    assert [item for item, _, _ in recs] == ["both", "only-a"]
    assert recs[0][2] == "b"  # its strongest contributor


def test_cooccurrence_tied_scores_rank_by_item_id() -> None:
    cooc = model()
    cooc.learn_basket(["a", "z", "m", "b"], at_ms=0)

    assert names(cooc.neighbours("a", at_ms=0)) == ["b", "m", "z"]


def test_cooccurrence_unknown_item_has_no_neighbours() -> None:
    assert model().neighbours("nope", at_ms=0) == []
    assert model().recommend(["nope"], at_ms=0) == []


def test_cooccurrence_invalid_parameters_raise() -> None:
    with pytest.raises(ValueError, match="top_k"):
        model(top_k=0)
    with pytest.raises(ValueError, match="measure"):
        model(measure="jaccard")


def test_cooccurrence_same_baskets_give_same_output_and_survive_pickle() -> None:
    baskets = [[f"i{(k * 7 + j) % 13}" for j in range(k % 5 + 1)] for k in range(60)]
    first, second = model(top_k=4), model(top_k=4)
    for k, basket in enumerate(baskets):
        first.learn_basket(basket, at_ms=k * 60_000)
        second.learn_basket(basket, at_ms=k * 60_000)
    restored = pickle.loads(pickle.dumps(first))

    outputs = {m.recommend(["i1", "i2"], at_ms=HOUR).__repr__() for m in (first, second, restored)}

    assert len(outputs) == 1


def test_cooccurrence_renormalisation_does_not_change_scores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    baskets = [(["a", "b", "c"][: 2 + k % 2], k * HOUR // 2) for k in range(12)]
    plain, renormalised = model(), model()
    for basket, at in baskets:
        plain.learn_basket(basket, at)
    monkeypatch.setattr(models.trending, "RENORMALISE_AFTER", 1)
    for basket, at in baskets:
        renormalised.learn_basket(basket, at)

    expected = plain.neighbours("a", at_ms=6 * HOUR)
    got = renormalised.neighbours("a", at_ms=6 * HOUR)
    assert names(got) == names(expected)
    assert [s for _, s in got] == pytest.approx([s for _, s in expected], rel=1e-9)


def test_cooccurrence_doctests_pass() -> None:
    assert doctest.testmod(models.cooccurrence).failed == 0


baskets = st.lists(
    st.tuples(st.lists(st.sampled_from("abcdefgh"), max_size=6), st.integers(0, 200 * HOUR)),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(
    baskets=baskets,
    measure=st.sampled_from(["cosine", "lift"]),
    min_support=st.sampled_from([0.0, 0.5, 2.0]),
)
def test_cooccurrence_any_baskets_give_finite_non_negative_scores(
    baskets: list[tuple[list[str], int]], measure: Measure, min_support: float
) -> None:
    cooc = model(measure=measure, min_support=min_support, top_k=3)
    at = 0
    for basket, gap in baskets:
        at += gap  # non-decreasing event times, past many renormalisations
        cooc.learn_basket(basket, at)

    for item in "abcdefgh":
        scores = [s for _, s in cooc.neighbours(item, at_ms=at, n=100)]
        assert len(scores) <= 3
        assert all(math.isfinite(s) and s >= 0.0 for s in scores)
        if measure == "cosine":
            assert all(s <= 1.0 + 1e-9 for s in scores)
    recs = cooc.recommend(list("abc"), at_ms=at, exclude={"d"})
    assert all(math.isfinite(s) and s >= 0.0 and item not in "abcd" for item, s, _ in recs)
