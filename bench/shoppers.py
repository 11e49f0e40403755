"""Synthetic shoppers for load benchmarks: contract events with journeys worth serving.

Each customer has one to a few sessions over the last two days. A session browses products
whose popularity is Zipf-like (a few bestsellers, a long tail), in a category; about a third
of sessions put the product in the cart, often with one or two of its accessories (a fixed
set of related products per product, so baskets co-occur as real ones do), and about half of
those carts are bought. The rest stay open, some of them long enough to count as abandoned.
Events come out in event-time order, keyed by customer, ready to produce to the events topic.
"""

from __future__ import annotations

import bisect
import itertools
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson

PRODUCTS = 20_000
CATEGORIES = 200
SPAN = timedelta(hours=48)
ZIPF_EXPONENT = 1.1


class Catalog:
    """Product ids with a skewed popularity, categories and accessories."""

    def __init__(self, products: int = PRODUCTS, seed: int = 7) -> None:
        self.products = products
        weights = [1 / rank**ZIPF_EXPONENT for rank in range(1, products + 1)]
        self._cumulative = list(itertools.accumulate(weights))
        rng = random.Random(seed)
        self._accessories = [[rng.randrange(products) for _ in range(3)] for _ in range(products)]
        self._prices = [round(rng.lognormvariate(3.5, 1.0), 2) for _ in range(products)]

    def popular(self, rng: random.Random) -> int:
        return bisect.bisect(self._cumulative, rng.random() * self._cumulative[-1])

    def accessory(self, product: int, rng: random.Random) -> int:
        return rng.choice(self._accessories[product])

    def properties(self, product: int) -> dict[str, object]:
        return {
            "product_id": product_id(product),
            "category": f"home.cat{product % CATEGORIES:03d}",
            "price": self._prices[product],
        }


def product_id(product: int) -> str:
    return f"sku-{product:05d}"


def customer_id(customer: int) -> str:
    return f"customer-{customer:06d}"


def events(
    customers: int, *, seed: int = 1, end: datetime | None = None, span: timedelta = SPAN
) -> list[tuple[bytes, bytes]]:
    """(key, JSON) pairs for `customers` shoppers over `span`, ordered by event time, ending
    at `end`."""
    rng = random.Random(seed)
    catalog = Catalog()
    start = (end or datetime.now(UTC)) - span
    timed: list[tuple[datetime, str, dict[str, object]]] = []
    for n in range(1, customers + 1):
        customer = customer_id(n)
        for session in range(1 + min(int(rng.expovariate(2.5)), 3)):
            at = start + span * rng.random() * 0.95
            for when, kind, props in _session(catalog, rng, at):
                timed.append((when, customer, {"type": kind, "session": session, **props}))
    timed.sort(key=lambda row: row[0])
    return [_encode(when, customer, body, rng) for when, customer, body in timed]


def _session(
    catalog: Catalog, rng: random.Random, at: datetime
) -> Iterator[tuple[datetime, str, dict[str, object]]]:
    def step() -> datetime:
        nonlocal at
        at += timedelta(seconds=rng.uniform(5, 90))
        return at

    channel = rng.choice(["web", "web", "app", "email"])
    yield step(), "email_click" if channel == "email" else "page_view", {"channel": channel}
    product = catalog.popular(rng)
    for _ in range(rng.randint(1, 3)):
        yield step(), "product_view", {"channel": channel, **catalog.properties(product)}
        if rng.random() < 0.4:
            product = catalog.popular(rng)
    if rng.random() > 0.35:
        return
    basket = [product] + [catalog.accessory(product, rng) for _ in range(rng.choice([0, 1, 1, 2]))]
    for item in basket:
        yield step(), "add_to_cart", {"channel": channel, "quantity": 1, **catalog.properties(item)}
    if rng.random() < 0.5:
        order = f"order-{uuid.UUID(int=rng.getrandbits(128)).hex[:16]}"
        yield step(), "purchase", {"channel": channel, "order_id": order}


def _encode(
    when: datetime, customer: str, body: dict[str, object], rng: random.Random
) -> tuple[bytes, bytes]:
    kind, channel, session = body.pop("type"), body.pop("channel"), body.pop("session")
    event = {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "customer_id": customer,
        "type": kind,
        "channel": channel,
        "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "session_id": f"{customer}-s{session}",
        "properties": body,
    }
    return customer.encode(), orjson.dumps(event)
