"""A customer's right of access and erasure (admin scope): everything held on them, and
erasing it so that their late or replayed events cannot rebuild it."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from models.access import Scope
from models.delivery import PendingDelivery
from models.events import ID_PATTERN
from models.state import decode_state
from service.api.auth import GUARDED, UNROUTABLE, requires
from service.api.deps import Context

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/v1",
    tags=["privacy"],
    dependencies=[requires(Scope.ADMIN)],
    responses=GUARDED | UNROUTABLE,
)

CustomerId = Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN)]

NOT_HELD_HERE = (
    "Kafka keeps the raw events, training samples and triggers for the topics' retention "
    "(it cannot delete single records); the models keep what they learned, not the samples; "
    "analytics counters and HyperLogLogs hold no customer id."
)


class Erased(BaseModel):
    customer_id: str
    journey: bool = Field(description="a journey (with its label book) existed and was erased")
    analytics_records: int = Field(description="unresolved analytics outcomes dropped")
    deliveries: int = Field(description="parked and dead webhook deliveries dropped")
    held_until: datetime = Field(description="events for this customer are dropped until then")


class CustomerExport(BaseModel):
    customer_id: str
    exported_at: datetime
    erased: bool = Field(description="an erasure is held: nothing else is kept")
    journey: dict[str, Any] | None = Field(
        description="the live journey, every field as stored (dedup ids and scores included)"
    )
    label_book: dict[str, Any] | None = Field(description="predictions waiting for an outcome")
    analytics_pending: str | None = Field(description="an unresolved exit or abandonment")
    parked_deliveries: list[dict[str, Any]]
    dead_deliveries: list[dict[str, Any]]
    not_held_here: str = NOT_HELD_HERE


@router.get("/customers/{customer_id:path}/export", summary="Everything held on one customer")
async def export_customer(customer_id: CustomerId, ctx: Context) -> CustomerExport:
    (stored,) = await ctx.store.load_many([customer_id], with_labels=True)
    deliveries = await ctx.deliveries.of_customer(customer_id)
    return CustomerExport(
        customer_id=customer_id,
        exported_at=datetime.now(UTC),
        erased=stored.erased,
        journey=_readable(stored.state),
        label_book=orjson.loads(stored.labels) if stored.labels is not None else None,
        analytics_pending=await ctx.analytics.pending_of(customer_id),
        parked_deliveries=[_delivery(d) for d in deliveries.parked],
        dead_deliveries=[_delivery(d) for _, d in deliveries.dead],
    )


@router.delete(
    "/customers/{customer_id:path}",
    summary="Erase a customer: journey, label book, deliveries; later events are dropped",
)
async def erase_customer(customer_id: CustomerId, ctx: Context) -> Erased:
    """Safe to repeat (each call renews the hold). Kafka's copies are not touched (see the
    export's `not_held_here`)."""
    settings = ctx.settings
    hold_ms = int(settings.privacy.erasure_hold_days * 86_400_000)
    journey = await ctx.store.erase(
        customer_id,
        stages=ctx.journey_map.stages,
        partitions=settings.kafka.partitions,
        hold_ms=hold_ms,
    )
    analytics = await ctx.analytics.erase_customer(customer_id, settings.kafka.partitions)
    deliveries = await ctx.deliveries.erase_customer(customer_id)
    logger.info("a customer was erased (journey: %s, deliveries: %d)", journey, deliveries)
    return Erased(
        customer_id=customer_id,
        journey=journey,
        analytics_records=int(analytics),
        deliveries=deliveries,
        held_until=datetime.fromtimestamp(time.time() + hold_ms / 1000, UTC),
    )


def _readable(state: bytes | None) -> dict[str, Any] | None:
    """The stored journey with its fields named (storage keeps some as bare arrays)."""
    if state is None:
        return None
    found: dict[str, Any] = orjson.loads(orjson.dumps(decode_state(state), default=_named))
    return found


def _named(value: Any) -> Any:
    """Named tuples (stage visits, cart items...) as objects with their field names."""
    if hasattr(value, "_asdict"):
        return value._asdict()
    raise TypeError(f"cannot export a {type(value).__name__}")


def _delivery(delivery: PendingDelivery) -> dict[str, Any]:
    found: dict[str, Any] = orjson.loads(delivery.to_json())
    return found
