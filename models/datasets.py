"""Recorded datasets mapped onto the event contract, row by row (pure: rows in, event dicts out).

Event ids are derived from the row's content, so replaying the same file twice is a no-op.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

REES46_TYPES: Final = {
    "view": "product_view",
    "cart": "add_to_cart",
    "remove_from_cart": "remove_from_cart",
    "purchase": "purchase",
}
REES46_COLUMNS: Final = ("event_time", "event_type", "product_id", "user_id", "user_session")
INSTACART_COLUMNS: Final = (
    "order_id",
    "user_id",
    "order_number",
    "product_id",
    "add_to_cart_order",
)
INSTACART_EPOCH: Final = datetime(2017, 1, 1, tzinfo=UTC)


def _digest(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()


def rees46_event(row: Mapping[str, str]) -> dict[str, Any]:
    """One REES46 clickstream row as an event.

    >>> e = rees46_event({"event_time": "2019-10-01 02:20:00 UTC", "event_type": "cart",
    ...     "product_id": "1004", "category_id": "205", "category_code": "electronics.phone",
    ...     "brand": "acme", "price": "99.50", "user_id": "42", "user_session": "s1"})
    >>> e["type"], e["timestamp"], e["properties"]["category"], e["properties"]["brand"]
    ('add_to_cart', '2019-10-01T02:20:00Z', 'electronics.phone', 'acme')
    """
    event_type = REES46_TYPES.get(row["event_type"], row["event_type"])
    stamp = row["event_time"].removesuffix(" UTC").replace(" ", "T") + "Z"
    properties: dict[str, Any] = {"product_id": row["product_id"]}
    category = row.get("category_code") or row.get("category_id")
    if category:
        properties["category"] = category
    if row.get("price"):
        properties["price"] = float(row["price"])
    if row.get("brand"):
        properties["brand"] = row["brand"]
    event: dict[str, Any] = {
        "event_id": "rees46-" + _digest(*(row.get(k, "") for k in sorted(row))),
        "customer_id": row["user_id"],
        "type": event_type,
        "channel": "web",
        "timestamp": stamp,
        "properties": properties,
    }
    if row.get("user_session"):
        event["session_id"] = row["user_session"]
    return event


def instacart_events(rows: Iterable[Mapping[str, str]]) -> Iterator[dict[str, Any]]:
    """Instacart order lines as add_to_cart events followed by one purchase per order.

    Order times are rebuilt per customer from `days_since_prior_order` and the hour of day,
    starting on 2017-01-01; items are added one second apart in their cart order.
    """
    elapsed_days: dict[str, float] = {}
    order: list[Mapping[str, str]] = []
    for row in rows:
        if order and row["order_id"] != order[0]["order_id"]:
            yield from _instacart_order(order, elapsed_days)
            order = []
        order.append(row)
    if order:
        yield from _instacart_order(order, elapsed_days)


def _instacart_order(
    lines: list[Mapping[str, str]], elapsed_days: dict[str, float]
) -> Iterator[dict[str, Any]]:
    head = lines[0]
    user, order_id = head["user_id"], head["order_id"]
    days = elapsed_days.get(user, 0.0) + float(head.get("days_since_prior_order") or 0)
    elapsed_days[user] = days
    start = INSTACART_EPOCH + timedelta(days=days, hours=int(head.get("order_hour_of_day") or 0))
    ordered = sorted(lines, key=lambda r: float(r.get("add_to_cart_order") or 0))
    for i, line in enumerate(ordered):
        yield _instacart_event(user, order_id, "add_to_cart", start + timedelta(seconds=i), line)
    done = start + timedelta(seconds=len(ordered))
    yield _instacart_event(user, order_id, "purchase", done, None)


def _instacart_event(
    user: str, order_id: str, event_type: str, at: datetime, line: Mapping[str, str] | None
) -> dict[str, Any]:
    properties: dict[str, Any] = {"order_id": order_id}
    if line is not None:
        properties["product_id"] = line["product_id"]
    product = line["product_id"] if line is not None else ""
    return {
        "event_id": "instacart-" + _digest(order_id, event_type, product),
        "customer_id": user,
        "type": event_type,
        "channel": "app",
        "timestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "session_id": f"order-{order_id}",
        "properties": properties,
    }
