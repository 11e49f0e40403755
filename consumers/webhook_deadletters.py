"""Dead-lettered webhook deliveries on their own topic: the trigger and why it never arrived.

One JSON record per delivery, keyed by customer id like the trigger: the trigger, the
subscription and delivery ids, the attempts made and the last status or error. It is the
durable, replayable account; the copy kept in Redis serves the redelivery API.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer

from models.delivery import PendingDelivery
from service.bus import send_all


class WebhookDeadLetters:
    """Produces dead-lettered deliveries and waits for the broker's acknowledgement."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, *, timeout_s: float) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s

    async def send(self, delivery: PendingDelivery, reason: str) -> None:
        value = orjson.dumps(
            {
                "trigger": orjson.loads(delivery.trigger.to_json()),
                "subscription_id": delivery.subscription_id,
                "delivery_id": delivery.delivery_id,
                "attempts": delivery.attempts,
                "last_status": delivery.last_status,
                "last_error": delivery.last_error,
                "reason": reason,
                "failed_at": datetime.now(UTC).isoformat(),
            }
        )
        key = delivery.trigger.customer_id.encode()
        await send_all(self._producer, self._topic, [(key, value, None)], timeout_s=self._timeout_s)
