"""Change detection on touchpoint exit and loop rates: jumps found with their start, steady
touchpoints (busy or not) left alone."""

from __future__ import annotations

import random

from models.analytics import HOUR_MS
from models.analytics_changes import Rule, changes

RULE = Rule(min_count=20, min_increase=0.1, z_min=4.0)
PAGE = "page_view|web|https://shop.example/checkout/pay"


def _hours(
    rng: random.Random, rates: list[float], per_hour: int, touch: str = PAGE, outcome: str = "x|"
) -> list[tuple[int, dict[str, int]]]:
    """Per hour, `per_hour` customers after `touch`, each leaving with that hour's rate."""
    series = []
    for i, rate in enumerate(rates):
        hits = sum(rng.random() < rate for _ in range(per_hour))
        series.append((i * HOUR_MS, {f"{outcome}{touch}": hits, f"p|{touch}": per_hour - hits}))
    return series


def _split(
    series: list[tuple[int, dict[str, int]]], recent: int
) -> tuple[dict[str, int], list[tuple[int, dict[str, int]]]]:
    baseline: dict[str, int] = {}
    for _, fields in series[:-recent]:
        for name, n in fields.items():
            baseline[name] = baseline.get(name, 0) + n
    return baseline, series[-recent:]


def test_a_jump_is_found_with_the_hour_it_started_and_the_customers_it_touched() -> None:
    rng = random.Random(7)
    series = _hours(rng, [0.2] * 72 + [0.2] * 3 + [0.6] * 3, per_hour=60)
    baseline, recent = _split(series, 6)

    [change] = changes("exit", baseline, recent, RULE)

    assert change.kind == "exit"
    assert change.touch == PAGE
    assert change.started == 75 * HOUR_MS
    assert change.customers == sum(f[f"x|{PAGE}"] for _, f in series[75:])
    assert change.seen == 3 * 60
    assert abs(change.rate - 0.6) < 0.1
    assert abs(change.baseline_rate - 0.2) < 0.03
    assert change.z >= RULE.z_min


def test_steady_touchpoints_are_not_flagged_however_busy() -> None:
    rng = random.Random(11)
    flagged = 0
    for i in range(200):
        touch = f"product_view|web|sku-{i}"
        busy = 2000 if i % 10 == 0 else 40
        series = _hours(rng, [0.3] * 78, per_hour=busy, touch=touch)
        baseline, recent = _split(series, 6)
        flagged += len(changes("exit", baseline, recent, RULE))
    assert flagged == 0


def test_too_few_outcomes_or_no_baseline_of_its_own_is_not_judged() -> None:
    rng = random.Random(3)
    thin = _hours(rng, [0.1] * 72 + [0.9] * 6, per_hour=3)  # 18 recent outcomes < 20
    assert changes("exit", *_split(thin, 6), RULE) == []
    new_page = _hours(rng, [0.0] * 72 + [0.9] * 6, per_hour=50)
    new_page[:72] = [(at, {}) for at, _ in new_page[:72]]  # never seen before the recent hours
    assert changes("exit", *_split(new_page, 6), RULE) == []


def test_a_rise_smaller_than_min_increase_is_not_reported_even_when_significant() -> None:
    rng = random.Random(5)
    series = _hours(rng, [0.2] * 72 + [0.27] * 6, per_hour=5000)
    baseline, recent = _split(series, 6)
    assert changes("exit", baseline, recent, RULE) == []
    [change] = changes("exit", baseline, recent, Rule(min_count=20, min_increase=0.05))
    assert change.started == 72 * HOUR_MS


def test_loops_are_judged_on_moves_back_not_exits_and_ranked_by_z() -> None:
    rng = random.Random(9)
    big = _hours(rng, [0.1] * 72 + [0.5] * 6, per_hour=100, touch="search|web|", outcome="k|")
    small = _hours(rng, [0.1] * 72 + [0.5] * 6, per_hour=30, touch="page_view|app|", outcome="k|")
    merged = [(at, {**a, **b}) for (at, a), (_, b) in zip(big, small, strict=True)]
    baseline, recent = _split(merged, 6)

    found = changes("loop", baseline, recent, RULE)

    assert [c.touch for c in found] == ["search|web|", "page_view|app|"]
    assert found[0].z > found[1].z
    assert all(c.kind == "loop" for c in found)
    assert changes("exit", baseline, recent, RULE) == []
