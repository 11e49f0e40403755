"""Subscriptions match triggers; signatures verify only the exact body, secret and a fresh time."""

from __future__ import annotations

import pytest

from models.triggers import TRIGGER_TYPES, Trigger, trigger_id
from models.webhooks import Filter, Subscription, delivery_id, sign, verify

TRIGGER = Trigger(
    trigger_id("cart.abandoned", "c1", "d1"),
    "cart.abandoned",
    "c1",
    "retail",
    1_700_000_000_000,
    {"cart": {"value": 80.0, "items": []}, "stage": "decision", "risk": 0.8},
)


def test_trigger_round_trips_through_json() -> None:
    assert Trigger.from_json(TRIGGER.to_json()) == TRIGGER
    assert TRIGGER.id == "cart.abandoned:c1:d1"
    assert len(TRIGGER_TYPES) == 4


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"{}", b'{"type": "cart.exploded", "id": "x"}', b"[1, 2]"],
)
def test_trigger_from_json_refuses_what_is_not_a_trigger(raw: bytes) -> None:
    with pytest.raises(ValueError, match="trigger"):
        Trigger.from_json(raw)


def test_signature_verifies_only_the_same_secret_body_and_a_fresh_timestamp() -> None:
    body, ts = TRIGGER.to_json(), 1_700_000_100
    signature = sign("s3cret", ts, body)

    assert signature.startswith("v1=")
    assert verify("s3cret", ts, body, signature, now=ts + 10)
    assert not verify("other", ts, body, signature, now=ts + 10)
    assert not verify("s3cret", ts, body + b" ", signature, now=ts + 10)
    assert not verify("s3cret", ts + 1, body, signature, now=ts + 10)
    assert not verify("s3cret", ts, body, signature, now=ts + 301)


def test_subscription_wants_its_types_within_its_filter_while_enabled() -> None:
    everything = Subscription("s1", "https://x.example/h", frozenset(), "k")
    carts = Subscription("s2", "https://x.example/h", frozenset({"cart.abandoned"}), "k")
    big = Subscription(
        "s3", "https://x.example/h", frozenset(), "k", filter=Filter(min_cart_value=100.0)
    )
    other_stage = Subscription(
        "s4", "https://x.example/h", frozenset(), "k", filter=Filter(stages=frozenset({"loyalty"}))
    )
    off = Subscription("s5", "https://x.example/h", frozenset(), "k", enabled=False)

    assert everything.wants(TRIGGER)
    assert carts.wants(TRIGGER)
    assert not big.wants(TRIGGER)
    assert not other_stage.wants(TRIGGER)
    assert not off.wants(TRIGGER)


def test_delivery_id_is_stable_per_trigger_and_subscription() -> None:
    assert delivery_id("t1", "s1") == delivery_id("t1", "s1")
    assert len({delivery_id("t1", "s1"), delivery_id("t1", "s2"), delivery_id("t2", "s1")}) == 3
