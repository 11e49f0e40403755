"""Simulated experiments with known conversion rates, through the pure modules only.

Customers are assigned by `split`, by `in_holdout` or by the ledger's Thompson bandit; their
outcomes are drawn from seeded generators and learned by an `ExperimentLedger` as the trainer
learns the samples; `report` must then show figures consistent with the truth: intervals that
cover the true rates, a bandit that moves traffic to the best arm, and the holdout lift.

UCB is not simulated: between two snapshots its choice is deterministic, so each batch of
delayed feedback sends all of its traffic to one arm (observed: 60-100% of the last 1,000
exposures on the best arm, depending on the seed), which is no behaviour to pin down.
"""

from __future__ import annotations

import random

from models.experiment_stats import ExperimentLedger, report
from models.experiments import ALL, HOLDOUT, ExperimentSpec, Outcome, in_holdout, split

NAME = "offer"
SPLIT_RATES = {"low": 0.05, "mid": 0.08, "high": 0.12}
BANDIT_RATES = {"weak": 0.04, "fair": 0.06, "best": 0.15}
BANDIT_EXPOSURES = 4_000
BANDIT_BATCH = 200  # exposures decided between two updates of the ledger (a snapshot's worth)
BANDIT_SEEDS = (0, 1, 2, 3, 4)
BANDIT_SETTLES_BY = 1_000
"""Exposures after which the best arm's cumulative share stays above 50% to the end (its
share first passing 50% says nothing: one early pick of it makes 100%). Observed for this
experiment over seeds 0-199: median 281, 95th percentile 507, 99th 915, worst 1,307 (a run
whose best arm drew badly in the first batches); under other experiment names (other bandit
seeds), 600 runs, worst 2,221. For `BANDIT_SEEDS`: 267-619. Five batches leaves a margin of
1.6 over the seeds used."""
HOLDOUT_SHARE = 0.2
HOLDOUT_RATES = {HOLDOUT: 0.10, "personalized": 0.13}


def three_way() -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {"decision": "custom:offer", "variants": [{"name": v} for v in SPLIT_RATES]}
    )


def learn_customer(
    ledger: ExperimentLedger, name: str, variant: str, converted: bool | None, at: int
) -> None:
    """An exposure, then (unless `converted` is None: the window is still open) its outcome."""
    ledger.learn(Outcome(name, variant, ALL, at, at, None))
    if converted is not None:
        ledger.learn(Outcome(name, variant, ALL, at, at + 1, converted))


def simulate_split(seed: int, customers: int, pending_share: float = 0.0) -> ExperimentLedger:
    """Customers split three ways, each converting at their variant's true rate."""
    rng = random.Random(seed)
    ledger = ExperimentLedger()
    spec = three_way()
    for i in range(customers):
        variant = split(spec, NAME, f"s{seed}-customer-{i}")
        converted = rng.random() < SPLIT_RATES[variant]
        learn_customer(
            ledger, NAME, variant, None if rng.random() < pending_share else converted, i
        )
    return ledger


def covers(interval: list[float] | None, truth: float) -> bool:
    return interval is not None and interval[0] <= truth <= interval[1]


# --- fixed split ----------------------------------------------------------------------------


def test_split_simulation_intervals_cover_true_rates_and_shares_even() -> None:
    # A 95% interval misses one true rate in twenty: over seeds 0-299 the fixed-horizon one
    # covered 95.1% of (seed, variant) cases and the anytime one all. Seed 0 is a run in which
    # the fixed-horizon ones cover too (coverage over many runs is the next test's).
    customers = 6_000
    ledger = simulate_split(seed=0, customers=customers, pending_share=0.1)

    figures = report(list(SPLIT_RATES), ledger.tally(NAME), bandit_policy=False)

    rows = {row["variant"]: row for row in figures["variants"]}
    assert figures["exposures"] == customers
    tolerance = 5 * ((1 / 3) * (2 / 3) / customers) ** 0.5
    for variant, truth in SPLIT_RATES.items():
        row = rows[variant]
        assert covers(row["ci95"], truth), (variant, row)
        assert covers(row["anytime_ci95"], truth), (variant, row)
        assert abs(figures["traffic_share"][variant] - 1 / 3) <= tolerance
        assert row["pending"] == row["exposures"] - row["resolved"] > 0
    assert figures["winner"] in (None, "high")
    assert max(rows, key=lambda v: rows[v]["probability_best"]) == "high"


def test_split_simulation_intervals_cover_truth_over_seeds() -> None:
    rows = [
        row
        for seed in range(40)
        for row in report(
            list(SPLIT_RATES),
            simulate_split(seed, customers=1_500).tally(NAME),
            bandit_policy=False,
        )["variants"]
    ]
    anytime = [covers(row["anytime_ci95"], SPLIT_RATES[row["variant"]]) for row in rows]
    fixed = [covers(row["ci95"], SPLIT_RATES[row["variant"]]) for row in rows]

    assert len(rows) == 120
    # Simultaneous 95% (each variant's at 95/3%): observed 120 of 120.
    assert sum(anytime) / len(rows) >= 0.9
    # Fixed-horizon 95% per variant: observed 115 of 120; 0.88 is 3.5 binomial sds below 0.95.
    assert sum(fixed) / len(rows) >= 0.88


# --- Thompson bandit ------------------------------------------------------------------------


def run_bandit(seed: int) -> list[str]:
    """The variants a Thompson bandit chose, in order; outcomes fed back per batch."""
    rng = random.Random(seed)
    ledger = ExperimentLedger()
    variants = list(BANDIT_RATES)
    chosen: list[str] = []
    while len(chosen) < BANDIT_EXPOSURES:
        batch = [ledger.choose(NAME, ALL, "thompson", variants) for _ in range(BANDIT_BATCH)]
        for variant in batch:
            learn_customer(ledger, NAME, variant, rng.random() < BANDIT_RATES[variant], len(chosen))
            chosen.append(variant)
    tally = ledger.tally(NAME)
    assert sum(arm.exposures for arm in tally.values()) == BANDIT_EXPOSURES
    return chosen


def settles_at(chosen: list[str], best: str) -> int:
    """The exposure count after which `best`'s cumulative share stays above one half."""
    settled, hits = 1, 0
    for n, variant in enumerate(chosen, start=1):
        hits += variant == best
        if hits * 2 <= n:
            settled = n + 1
    return settled


def share(chosen: list[str], variant: str) -> float:
    return chosen.count(variant) / len(chosen)


def test_thompson_simulation_moves_traffic_to_best_arm() -> None:
    for seed in BANDIT_SEEDS:
        chosen = run_bandit(seed)

        assert share(chosen, "best") > 0.5, seed
        assert share(chosen[-1_000:], "best") > 0.8, seed
        assert settles_at(chosen, "best") <= BANDIT_SETTLES_BY, seed


def test_thompson_simulation_first_batch_explores_every_arm() -> None:
    # Before any outcome the posterior is uniform: every arm gets a fair share of batch one.
    first = run_bandit(0)[:BANDIT_BATCH]

    assert all(share(first, variant) > 0.2 for variant in BANDIT_RATES)


def test_settles_at_counts_last_time_share_was_at_most_half() -> None:
    assert settles_at(["a", "b", "a", "a"], "a") == 3
    assert settles_at(["a", "a"], "a") == 1
    assert settles_at(["b", "a"], "a") == 3


# --- holdout --------------------------------------------------------------------------------


def simulate_holdout(seed: int, customers: int) -> ExperimentLedger:
    rng = random.Random(seed)
    ledger = ExperimentLedger()
    for i in range(customers):
        cid = f"h{seed}-customer-{i}"
        variant = HOLDOUT if in_holdout(cid, HOLDOUT_SHARE) else "personalized"
        learn_customer(ledger, HOLDOUT, variant, rng.random() < HOLDOUT_RATES[variant], i)
    return ledger


def test_holdout_simulation_lift_from_counts_and_true_lift_within_bounds() -> None:
    customers = 20_000
    ledger = simulate_holdout(seed=7, customers=customers)
    tally = ledger.tally(HOLDOUT)

    figures = report([HOLDOUT, "personalized"], tally, bandit_policy=False)

    rows = {row["variant"]: row for row in figures["variants"]}
    held, treated = tally[HOLDOUT], tally["personalized"]
    assert held.rate is not None
    assert treated.rate is not None
    assert abs(rows["personalized"]["lift_vs_control"] - (treated.rate / held.rate - 1)) <= 1e-6
    assert rows[HOLDOUT]["lift_vs_control"] is None
    low_h, high_h = rows[HOLDOUT]["anytime_ci95"]
    low_p, high_p = rows["personalized"]["anytime_ci95"]
    true_lift = HOLDOUT_RATES["personalized"] / HOLDOUT_RATES[HOLDOUT] - 1
    assert low_h > 0
    assert low_p / high_h - 1 <= true_lift <= high_p / low_h - 1
    tolerance = 5 * (HOLDOUT_SHARE * (1 - HOLDOUT_SHARE) / customers) ** 0.5
    assert abs(figures["traffic_share"][HOLDOUT] - HOLDOUT_SHARE) <= tolerance
