"""A circuit breaker per webhook subscription: stop hammering a receiver that keeps failing.

Closed: deliveries go through; `threshold` consecutive failures open it. Open: nothing is
attempted (deliveries wait, parked, without burning attempts) until the cool-down passes.
Half-open: one probe goes through; success closes the breaker, failure re-opens it with the
cool-down doubled (capped), so a receiver that stays down is probed ever more rarely.
Time is passed in (seconds, any monotonic or wall clock), so the machine is pure.

>>> b = Breaker(threshold=2, cooldown_s=10.0, max_cooldown_s=60.0)
>>> b.record_failure(now=0); b.record_failure(now=1); b.state
'open'
>>> b.allow(now=5), b.allow(now=11), b.state, b.allow(now=11)
(False, True, 'half_open', False)
>>> b.record_failure(now=12); b.retry_at, b.open_for_s
(32.0, 20.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

BreakerState = Literal["closed", "half_open", "open"]
STATE_VALUES: Final[dict[BreakerState, int]] = {"closed": 0, "half_open": 1, "open": 2}
"""The breaker state as a gauge value: 0 closed, 1 half-open, 2 open."""


@dataclass(slots=True)
class Breaker:
    """One subscription's breaker; see the module docstring."""

    threshold: int
    cooldown_s: float
    max_cooldown_s: float
    state: BreakerState = "closed"
    failures: int = 0
    retry_at: float = 0.0
    probing: bool = False
    open_for_s: float = 0.0
    """The cool-down the breaker last opened with (0 until it first opens)."""

    def allow(self, now: float) -> bool:
        """May a delivery be attempted now? In half-open, only the first caller probes."""
        if self.state == "closed":
            return True
        if self.state == "open" and now >= self.retry_at:
            self.state = "half_open"
        if self.state == "half_open" and not self.probing:
            self.probing = True
            return True
        return False

    def wait_until(self, now: float) -> float:
        """When a delivery refused now should come back (a probe is in flight: soon)."""
        if self.state == "open":
            return max(self.retry_at, now)
        return now + min(self.cooldown_s, 1.0)

    def record_success(self) -> None:
        self.state, self.failures, self.probing, self.open_for_s = "closed", 0, False, 0.0

    def record_failure(self, now: float) -> None:
        self.failures += 1
        if self.state == "half_open":
            self._open(now, min(self.open_for_s * 2, self.max_cooldown_s))
        elif self.state == "closed" and self.failures >= self.threshold:
            self._open(now, self.cooldown_s)

    def snapshot(self) -> dict[str, Any]:
        """What the API shows: state, consecutive failures, and when the next probe may go."""
        return {
            "state": self.state,
            "consecutive_failures": self.failures,
            "retry_at": self.retry_at if self.state != "closed" else None,
        }

    def _open(self, now: float, cooldown_s: float) -> None:
        self.state, self.probing, self.open_for_s = "open", False, cooldown_s
        self.retry_at = now + cooldown_s
