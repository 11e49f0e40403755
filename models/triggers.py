"""Triggers: the journey moments marketing automation acts on, as records on the triggers topic.

A trigger's id is deterministic (type, customer and what caused it), so a consumer that
re-emits after a crash produces the same id, and receivers deduplicate by it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

import orjson

TriggerType = Literal[
    "cart.abandoned", "cart.at_risk", "journey.stage_changed", "customer.converted"
]
TRIGGER_TYPES: Final[tuple[TriggerType, ...]] = get_args(TriggerType)


@dataclass(frozen=True, slots=True)
class Trigger:
    """Something happened in a customer's journey, at event time `at` (epoch ms)."""

    id: str
    type: TriggerType
    customer_id: str
    journey_map: str
    at: int
    payload: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "type": self.type,
                "customer_id": self.customer_id,
                "journey_map": self.journey_map,
                "at": self.at,
                "payload": self.payload,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Trigger:
        """Raises ValueError (with the reason) for anything that is not a trigger record."""
        try:
            data = orjson.loads(raw)
            kind = data["type"]
            if kind not in TRIGGER_TYPES:
                raise ValueError(f"unknown trigger type {kind!r}")
            return cls(
                id=str(data["id"]),
                type=kind,
                customer_id=str(data["customer_id"]),
                journey_map=str(data["journey_map"]),
                at=int(data["at"]),
                payload=dict(data["payload"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"not a trigger record: {exc}") from None


def trigger_id(kind: TriggerType, customer_id: str, cause: str) -> str:
    """`<type>:<customer>:<cause>`; `cause` is the causing event's digest or a deadline."""
    return f"{kind}:{customer_id}:{cause}"
