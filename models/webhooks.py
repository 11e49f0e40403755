"""Webhook subscriptions and signatures: which endpoint gets which trigger, and proof it is us.

Signing: `Parcours-Signature: v1=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>` with the
Unix-seconds `Parcours-Timestamp` header; a receiver recomputes it over the raw body and
rejects old timestamps (replays). The scheme names its version so secrets can be rotated and
the algorithm changed without breaking receivers.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

from models.triggers import Trigger, TriggerType

SIGNATURE_VERSION: Final = "v1"
HEADER_SIGNATURE: Final = "Parcours-Signature"
HEADER_TIMESTAMP: Final = "Parcours-Timestamp"
HEADER_DELIVERY: Final = "Parcours-Delivery-Id"
HEADER_TRIGGER: Final = "Parcours-Trigger-Id"
HEADER_TYPE: Final = "Parcours-Trigger-Type"


@dataclass(frozen=True, slots=True)
class Filter:
    """Optional narrowing of a subscription: a minimum cart value, and/or only these stages."""

    min_cart_value: float | None = None
    stages: frozenset[str] | None = None

    def admits(self, trigger: Trigger) -> bool:
        payload = trigger.payload
        if self.min_cart_value is not None:
            cart = payload.get("cart") or {}
            if float(cart.get("value", 0.0)) < self.min_cart_value:
                return False
        return self.stages is None or payload.get("stage") in self.stages


@dataclass(frozen=True, slots=True)
class Subscription:
    """An endpoint that receives the listed trigger types (all of them when `triggers` is empty)."""

    id: str
    url: str
    triggers: frozenset[TriggerType]
    secret: str
    enabled: bool = True
    filter: Filter = Filter()
    created_at: int = 0
    """Epoch ms; subscriptions are listed in creation order."""
    description: str | None = None
    """Free text for the people who manage the subscription; never sent to the target."""

    def wants(self, trigger: Trigger) -> bool:
        if not self.enabled:
            return False
        if self.triggers and trigger.type not in self.triggers:
            return False
        return self.filter.admits(trigger)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `Parcours-Signature` header value for `body` sent at `timestamp` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def verify(
    secret: str, timestamp: int, body: bytes, signature: str, *, now: int, tolerance_s: int = 300
) -> bool:
    """What a receiver does: the signature matches (constant time) and is recent enough."""
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def delivery_id(trigger_id: str, subscription_id: str) -> str:
    """One delivery per trigger and subscription: the same id on every attempt and redelivery."""
    digest = hashlib.blake2b(f"{trigger_id}\n{subscription_id}".encode(), digest_size=12)
    return digest.hexdigest()
