"""Delivery policy: which results retry, backoff and jitter bounds, Retry-After, breaker moves."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.breaker import Breaker
from models.delivery import AttemptResult, PendingDelivery, RetryPolicy, parse_retry_after
from models.offsets import OffsetTracker
from models.triggers import Trigger

POLICY = RetryPolicy(max_attempts=5, backoff_base_s=0.5, backoff_max_s=30.0, retry_after_max_s=60)


@pytest.mark.parametrize(
    ("result", "verdict"),
    [
        (AttemptResult(200, 0.1), "delivered"),
        (AttemptResult(204, 0.1), "delivered"),
        (AttemptResult(500, 0.1), "retry"),
        (AttemptResult(503, 0.1), "retry"),
        (AttemptResult(429, 0.1), "retry"),
        (AttemptResult(None, 1.0, error="timeout"), "retry"),
        (AttemptResult(None, 0.0, error="connection refused"), "retry"),
        (AttemptResult(400, 0.1), "rejected"),
        (AttemptResult(404, 0.1), "rejected"),
        (AttemptResult(301, 0.1), "rejected"),
        (AttemptResult(None, 0.0, error="private address", refused=True), "rejected"),
    ],
)
def test_attempt_result_verdict_by_status(result: AttemptResult, verdict: str) -> None:
    assert result.verdict == verdict


@given(attempt=st.integers(1, 40), unit=st.floats(0, 1, exclude_max=True))
def test_backoff_full_jitter_stays_within_the_capped_exponential(attempt: int, unit: float) -> None:
    delay = POLICY.backoff_s(attempt, unit)

    assert 0 <= delay <= min(30.0, 0.5 * 2 ** (attempt - 1))


def test_backoff_jitter_spreads_over_the_whole_window() -> None:
    rng = random.Random(1)
    delays = [POLICY.backoff_s(4, rng.random()) for _ in range(2000)]

    assert min(delays) < 0.1
    assert max(delays) > 3.9
    assert max(delays) <= 4.0


def test_next_delay_stops_after_max_attempts_and_on_rejection() -> None:
    failing = AttemptResult(503, 0.1)

    assert POLICY.next_delay(failing, 4, 0.5) is not None
    assert POLICY.next_delay(failing, 5, 0.5) is None
    assert POLICY.next_delay(AttemptResult(422, 0.1), 1, 0.5) is None
    assert POLICY.next_delay(AttemptResult(200, 0.1), 1, 0.5) is None


def test_next_delay_honours_retry_after_up_to_the_cap() -> None:
    assert POLICY.next_delay(AttemptResult(429, 0.1, retry_after_s=7), 1, 0.9) == 7
    assert POLICY.next_delay(AttemptResult(503, 0.1, retry_after_s=7200), 1, 0.9) == 60


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("0", 0.0),
        ("  42 ", 42.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0),
        ("Wed, 21 Oct 2015 07:26:00 GMT", 0.0),
        (None, None),
        ("", None),
        ("-5", None),
        ("tomorrow", None),
    ],
)
def test_parse_retry_after_seconds_or_http_date(header: str | None, seconds: float | None) -> None:
    now = 1445412420.0  # 2015-10-21 07:27:00 UTC
    assert parse_retry_after(header, now) == seconds


def test_breaker_opens_after_threshold_consecutive_failures_only() -> None:
    breaker = Breaker(threshold=3, cooldown_s=10, max_cooldown_s=100)
    breaker.record_failure(0)
    breaker.record_failure(1)
    breaker.record_success()
    breaker.record_failure(2)
    breaker.record_failure(3)
    assert breaker.state == "closed"
    assert breaker.allow(3)

    breaker.record_failure(4)

    assert breaker.state == "open"
    assert not breaker.allow(13.9)
    assert breaker.wait_until(5) == 14


def test_breaker_half_open_lets_one_probe_and_success_closes() -> None:
    breaker = Breaker(threshold=1, cooldown_s=10, max_cooldown_s=100)
    breaker.record_failure(0)

    assert breaker.allow(10)
    assert breaker.state == "half_open"
    assert not breaker.allow(10)
    breaker.record_success()

    assert breaker.state == "closed"
    assert breaker.allow(10)
    assert breaker.allow(10)


def test_breaker_failed_probe_reopens_with_a_longer_capped_cooldown() -> None:
    breaker = Breaker(threshold=1, cooldown_s=10, max_cooldown_s=25)
    breaker.record_failure(0)
    cooldowns = []
    now = 0.0
    for _ in range(4):
        now = breaker.retry_at
        assert breaker.allow(now)
        breaker.record_failure(now)
        cooldowns.append(breaker.retry_at - now)

    assert cooldowns == [20, 25, 25, 25]
    breaker.allow(breaker.retry_at)
    breaker.record_success()
    breaker.record_failure(200)
    assert breaker.retry_at == 210, "success resets the cool-down"


def test_offset_tracker_commits_only_the_contiguous_settled_prefix() -> None:
    tracker = OffsetTracker()
    gen = tracker.assign(3)
    for offset, deliveries in [(10, 1), (11, 2), (12, 0), (13, 1)]:
        tracker.add(3, offset, deliveries)

    tracker.settle(3, gen, 11)
    tracker.settle(3, gen, 13)
    assert tracker.committable(3) is None
    tracker.settle(3, gen, 10)
    assert tracker.committable(3) == 11
    tracker.settle(3, gen, 11)
    assert tracker.committable(3) == 14
    assert tracker.pending() == 0


def test_offset_tracker_ignores_settlements_from_an_earlier_assignment() -> None:
    tracker = OffsetTracker()
    old = tracker.assign(0)
    tracker.add(0, 5, 1)
    new = tracker.assign(0)
    tracker.add(0, 5, 1)

    tracker.settle(0, old, 5)
    assert tracker.committable(0) is None
    tracker.settle(0, new, 5)
    assert tracker.committable(0) == 6


def test_pending_delivery_round_trips_through_json() -> None:
    trigger = Trigger("t:1", "cart.abandoned", "c1", "retail", 1, {"cart": {"value": 3.5}})
    pending = PendingDelivery(trigger, "sub-1", "d1", 2, 1234, 503, "HTTP 503")

    assert PendingDelivery.from_json(pending.to_json()) == pending
    assert pending.after(AttemptResult(500, 0.1)).attempts == 3
    assert pending.fresh().attempts == 0
