"""Webhook delivery policy and bookkeeping, as pure values: what an attempt's result means,
how long to wait before the next one, and the records kept about deliveries.

Retried: 5xx, 429 (after its Retry-After, capped), timeouts and connection errors, with
exponential backoff and full jitter (delay uniform in [0, min(max, base * 2**(n-1))]), so
many deliveries failing together do not come back together. Other 4xx, and targets refused
by the address check, fail at once: sending the same request again cannot help.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import orjson

from models.triggers import Trigger

Verdict = Literal["delivered", "retry", "rejected"]
Outcome = Literal["delivered", "retrying", "dead_lettered"]


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one HTTP attempt came to: a status, or an error (timeout, connection, refused)."""

    status: int | None
    latency_s: float
    error: str | None = None
    retry_after_s: float | None = None
    refused: bool = False

    @property
    def verdict(self) -> Verdict:
        if self.refused:
            return "rejected"
        if self.status is None:
            return "retry"
        if 200 <= self.status < 300:
            return "delivered"
        if self.status >= 500 or self.status == 429:
            return "retry"
        return "rejected"

    @property
    def kind(self) -> str:
        """A low-cardinality label: 2xx, 3xx, 4xx, 429, 5xx, error, refused."""
        if self.refused:
            return "refused"
        if self.status is None:
            return "error"
        return "429" if self.status == 429 else f"{self.status // 100}xx"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    backoff_base_s: float
    backoff_max_s: float
    retry_after_max_s: float

    def backoff_s(self, attempt: int, unit: float) -> float:
        """Delay after failed attempt `attempt` (1-based); `unit` is uniform in [0, 1).

        >>> RetryPolicy(5, 1.0, 8.0, 60).backoff_s(3, 0.5)
        2.0
        """
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2.0 ** (attempt - 1))
        return ceiling * unit

    def next_delay(self, result: AttemptResult, attempt: int, unit: float) -> float | None:
        """Seconds until the next attempt, or None when the delivery is done (or dead)."""
        if result.verdict != "retry" or attempt >= self.max_attempts:
            return None
        if result.retry_after_s is not None:
            return min(max(result.retry_after_s, 0.0), self.retry_after_max_s)
        return self.backoff_s(attempt, unit)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """A Retry-After header as seconds from `now` (Unix time): delta-seconds or an HTTP date.

    >>> parse_retry_after("120", now=0)
    120.0
    >>> parse_retry_after("Thu, 01 Jan 1970 00:01:00 GMT", now=30)
    30.0
    >>> parse_retry_after("soon", now=0) is None
    True
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class PendingDelivery:
    """A delivery not yet done, as parked in Redis and kept when dead-lettered.

    `attempts` counts attempts made so far; `record_ms` is the trigger record's Kafka timestamp
    (for the trigger-to-delivery lag); `last_*` describe the latest failed attempt.
    """

    trigger: Trigger
    subscription_id: str
    delivery_id: str
    attempts: int = 0
    record_ms: int = 0
    last_status: int | None = None
    last_error: str | None = None

    def after(self, result: AttemptResult) -> PendingDelivery:
        """This delivery with one more attempt made, ending in `result`."""
        return PendingDelivery(
            self.trigger, self.subscription_id, self.delivery_id, self.attempts + 1,
            self.record_ms, result.status, result.error,
        )  # fmt: skip

    def fresh(self) -> PendingDelivery:
        """The same delivery with its attempts reset (a redelivery asked for by a person)."""
        return PendingDelivery(
            self.trigger, self.subscription_id, self.delivery_id, 0, self.record_ms
        )

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "trigger": orjson.loads(self.trigger.to_json()),
                "subscription_id": self.subscription_id,
                "delivery_id": self.delivery_id,
                "attempts": self.attempts,
                "record_ms": self.record_ms,
                "last_status": self.last_status,
                "last_error": self.last_error,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> PendingDelivery:
        data = orjson.loads(raw)
        return cls(
            Trigger.from_json(orjson.dumps(data["trigger"])),
            str(data["subscription_id"]),
            str(data["delivery_id"]),
            int(data["attempts"]),
            int(data.get("record_ms", 0)),
            data.get("last_status"),
            data.get("last_error"),
        )


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One line of a subscription's delivery log."""

    delivery_id: str
    trigger_id: str
    trigger_type: str
    attempt: int
    status: int | None
    latency_ms: float
    error: str | None
    at: float
    outcome: Outcome

    @classmethod
    def of(
        cls, delivery: PendingDelivery, result: AttemptResult, outcome: Outcome, at: float
    ) -> AttemptRecord:
        """The log line for `delivery`'s attempt number `delivery.attempts`."""
        return cls(
            delivery.delivery_id, delivery.trigger.id, delivery.trigger.type, delivery.attempts,
            result.status, round(result.latency_s * 1000, 3), result.error, at, outcome,
        )  # fmt: skip

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @staticmethod
    def decode(raw: bytes | str) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads(raw)
        return data
