"""Fuzzing the two parsers that take outside input: the event decoder (bytes from HTTP and
Kafka) and the journey-map loader (a shop's YAML). Whatever they are fed, they either accept
it or refuse it with their own error naming where the problem is; nothing else escapes.

Bounded: a fixed number of examples per property (the suite's time budget), no deadline (the
machine is shared)."""

from __future__ import annotations

import json
import string
from importlib import resources
from typing import Any

import orjson
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.errors import InvalidEvent, JourneyMapError
from models.events import CANONICAL_TYPES, Event, EventDecoder
from models.journeymap import JourneyMap, parse_journey_map

NOW_MS = 1_795_000_000_000
FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])

decoder = EventDecoder(frozenset(CANONICAL_TYPES))

# JSON values of every shape, with strings that look like the contract's own.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30])  # past what JSON encoders hold
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from([*CANONICAL_TYPES, "web", "2026-11-23T10:15:00Z", "2026-11-23", "", "\x00"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)
VALID: dict[str, Any] = {
    "event_id": "e-1",
    "customer_id": "c-1",
    "type": "add_to_cart",
    "channel": "web",
    "timestamp": "2026-11-23T10:15:00Z",
    "session_id": "s-1",
    "properties": {"product_id": "p-1", "price": 9.5, "quantity": 2},
}
FIELDS = [*VALID, "properties.price", "properties.quantity", "properties.personalization"]


@st.composite
def near_valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with a few fields replaced by anything, removed, or added."""
    event: dict[str, Any] = orjson.loads(orjson.dumps(VALID))
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        nested = name.startswith("properties.")
        target, key = (event.get("properties"), name[11:]) if nested else (event, name)
        if not isinstance(target, dict):
            continue
        if draw(st.booleans()):
            target[key] = draw(json_values)
        else:
            target.pop(key, None)
    if draw(st.booleans()):
        event[draw(st.text(max_size=10))] = draw(json_values)
    if isinstance(event.get("properties"), dict) and draw(st.booleans()):
        event["properties"][draw(st.text(max_size=10))] = draw(json_values)  # a free key
    return event


def _refusal_is_precise(exc: InvalidEvent) -> None:
    assert exc.reason
    assert exc.errors
    for error in exc.errors:
        assert isinstance(error["loc"], list | tuple)
        assert isinstance(error["msg"], str)
        assert error["msg"]


def _decode(data: bytes, *, batch: bool = False) -> None:
    try:
        decoded: Any = (decoder.decode_batch if batch else decoder.decode)(data, NOW_MS)
    except InvalidEvent as exc:
        _refusal_is_precise(exc)
        return
    for event in decoded if batch else [decoded]:
        assert isinstance(event, Event)


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes_are_decoded_or_refused_precisely(data: bytes) -> None:
    _decode(data)
    _decode(data, batch=True)


@FUZZ
@given(json_values)
def test_any_json_is_decoded_or_refused_precisely(value: Any) -> None:
    data = json.dumps(value).encode()  # (orjson cannot write integers past 64 bits)
    _decode(data)
    _decode(data, batch=True)


@FUZZ
@given(near_valid_events())
def test_events_one_change_from_valid_are_decoded_or_refused_naming_a_field(
    event: dict[str, Any],
) -> None:
    data = json.dumps(event).encode()
    try:
        decoded = decoder.decode(data, NOW_MS)
    except InvalidEvent as exc:
        _refusal_is_precise(exc)
        return
    assert decoded.customer_id == event["customer_id"]
    assert decoded.event_id == event["event_id"]


RETAIL = resources.files("models.maps").joinpath("retail.yaml").read_text("utf-8")
RETAIL_TREE = yaml.safe_load(RETAIL)
MAP_KEYS = ["name", "stages", "rules", "session_timeout_minutes", "description", "actions"]


def _load(text: str) -> None:
    try:
        loaded = parse_journey_map(text, "shop.yaml")
    except JourneyMapError as exc:
        refusal = str(exc)
    else:
        assert isinstance(loaded, JourneyMap)
        assert loaded.stages
        return
    assert "shop.yaml" in refusal  # every refusal names the file (and line)


@FUZZ
@given(st.text(alphabet=string.printable, max_size=300))
def test_any_text_as_a_journey_map_loads_or_is_refused_naming_the_file(text: str) -> None:
    _load(text)


@FUZZ
@given(st.lists(st.sampled_from(MAP_KEYS), max_size=3), st.data())
def test_a_retail_map_with_parts_replaced_loads_or_is_refused_naming_the_file(
    replaced: list[str], data: st.DataObject
) -> None:
    tree: dict[str, Any] = orjson.loads(orjson.dumps(RETAIL_TREE))
    for key in replaced:
        if data.draw(st.booleans()):
            tree[key] = data.draw(json_values)
        else:
            tree.pop(key, None)
    if tree.get("rules") and isinstance(tree["rules"], list) and data.draw(st.booleans()):
        index = data.draw(st.integers(0, len(tree["rules"]) - 1))
        rule = tree["rules"][index]
        if isinstance(rule, dict) and rule:
            rule[data.draw(st.sampled_from([*rule, "where", "from", "to"]))] = data.draw(
                json_values
            )
    _load(yaml.safe_dump(tree, allow_unicode=True))
