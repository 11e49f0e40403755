"""Redelivering a dead-lettered webhook delivery on request: one attempt now, then the queue.

The stored dead delivery is sent again at once with its original delivery id. Delivered: it
is no longer dead. A failure that may pass (5xx, timeout) parks it with fresh attempts, so a
dispatcher retries it on the usual schedule; a rejection leaves it dead.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Literal

from models.delivery import AttemptRecord, AttemptResult, RetryPolicy
from service.deliveries import DeliveryStore
from service.subscriptions import SubscriptionStore
from service.webhook_sender import WebhookSender

Status = Literal["delivered", "queued", "failed"]


@dataclass(frozen=True, slots=True)
class Redelivery:
    status: Status
    attempt: AttemptResult

    def public(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "status_code": self.attempt.status,
            "error": self.attempt.error,
            "latency_ms": round(self.attempt.latency_s * 1000, 3),
        }


async def redeliver(
    subscriptions: SubscriptionStore,
    deliveries: DeliveryStore,
    sender: WebhookSender,
    policy: RetryPolicy,
    subscription_id: str,
    delivery_id: str,
) -> Redelivery | None:
    """None if the subscription or the dead delivery is unknown."""
    sub = await subscriptions.get(subscription_id)
    dead = await deliveries.dead(subscription_id, delivery_id) if sub is not None else None
    if sub is None or dead is None:
        return None
    result = await sender.send(sub, dead.fresh())
    delivery, now = dead.fresh().after(result), time.time()
    if result.verdict == "delivered":
        await deliveries.log(sub.id, AttemptRecord.of(delivery, result, "delivered", now))
        await deliveries.resurrect(delivery)
        return Redelivery("delivered", result)
    delay = policy.next_delay(result, delivery.attempts, random.random())
    if delay is None:
        await deliveries.log(sub.id, AttemptRecord.of(delivery, result, "dead_lettered", now))
        return Redelivery("failed", result)
    await deliveries.log(sub.id, AttemptRecord.of(delivery, result, "retrying", now))
    await deliveries.park(delivery, now + delay)
    await deliveries.resurrect(delivery)
    return Redelivery("queued", result)
