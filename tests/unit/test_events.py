"""The event contract as enforced by `EventDecoder` (Kafka records and HTTP bodies)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from models.errors import InvalidEvent
from models.events import (
    CANONICAL_TYPES,
    MAX_BATCH,
    MAX_EXTRA_BYTES,
    MAX_EXTRA_KEYS,
    Event,
    EventDecoder,
    event_json_schema,
)
from models.journeymap import JourneyMap

NOW_MS = 1_772_355_600_000  # 2026-03-01T09:00:00Z
VALID: dict[str, Any] = {
    "event_id": "e-1",
    "customer_id": "c1",
    "type": "add_to_cart",
    "channel": "web",
    "timestamp": "2026-03-01T09:00:00Z",
    "session_id": "s-1",
    "properties": {"product_id": "sku-1", "price": 49.9, "quantity": 2, "colour": "red"},
}


def payload(**changes: Any) -> dict[str, Any]:
    """`VALID` with top-level keys replaced; a value of `...` removes the key."""
    data = {**VALID, **changes}
    return {key: value for key, value in data.items() if value is not ...}


def with_props(**changes: Any) -> dict[str, Any]:
    """`VALID` with property keys replaced; a value of `...` removes the key."""
    props = {**VALID["properties"], **changes}
    return payload(properties={k: v for k, v in props.items() if v is not ...})


def raw(data: Any) -> bytes:
    return orjson.dumps(data)


@pytest.fixture
def decoder() -> EventDecoder:
    return EventDecoder(frozenset(CANONICAL_TYPES))


def rejection(decoder: EventDecoder, data: bytes | None, *, batch: bool = False) -> InvalidEvent:
    decode: Callable[[Any, int], object] = decoder.decode_batch if batch else decoder.decode
    with pytest.raises(InvalidEvent) as info:
        decode(data, NOW_MS)
    return info.value


def locs(exc: InvalidEvent) -> list[list[str | int]]:
    return [error["loc"] for error in exc.errors]


# --- valid events -------------------------------------------------------------------------


def test_decode_valid_event_returns_typed_event(decoder: EventDecoder) -> None:
    event = decoder.decode(raw(VALID), NOW_MS)

    assert event.event_id == "e-1"
    assert event.type == "add_to_cart"
    assert event.channel == "web"
    assert event.timestamp_ms == NOW_MS
    assert event.properties.product_id == "sku-1"
    assert event.properties.quantity == 2
    assert event.properties.model_extra == {"colour": "red"}


def test_to_json_valid_event_round_trips_through_decoder(decoder: EventDecoder) -> None:
    event = decoder.decode(raw(VALID), NOW_MS)

    wire = event.to_json()
    again = decoder.decode(wire, NOW_MS)

    assert again == event
    assert again.to_json() == wire
    assert orjson.loads(wire)["properties"]["colour"] == "red"


def test_to_json_optional_fields_absent_are_omitted(decoder: EventDecoder) -> None:
    event = decoder.decode(raw(payload(type="page_view", session_id=..., properties=...)), NOW_MS)

    wire = orjson.loads(event.to_json())

    assert "session_id" not in wire
    assert wire["properties"] == {}


def test_decode_timestamp_with_offset_keeps_instant(decoder: EventDecoder) -> None:
    event = decoder.decode(raw(payload(timestamp="2026-03-01T10:00:00+01:00")), NOW_MS)

    assert event.timestamp_ms == NOW_MS


# --- rejected Kafka records ---------------------------------------------------------------


def test_decode_invalid_json_reason_invalid_json(decoder: EventDecoder) -> None:
    exc = rejection(decoder, b'{"event_id": "e-1",')

    assert exc.reason == "invalid_json"
    assert locs(exc) == [[]]


def test_decode_non_utf8_bytes_reason_invalid_json(decoder: EventDecoder) -> None:
    exc = rejection(decoder, b'{"event_id": "\xff\xfe"}')

    assert exc.reason == "invalid_json"
    assert exc.errors[0]["type"] == "json_invalid"


@pytest.mark.parametrize("value", [b"", None])
def test_decode_empty_value_reason_empty(decoder: EventDecoder, value: bytes | None) -> None:
    exc = rejection(decoder, value)

    assert exc.reason == "empty"
    assert locs(exc) == [[]]


def test_decode_missing_customer_id_names_field(decoder: EventDecoder) -> None:
    exc = rejection(decoder, raw(payload(customer_id=...)))

    assert exc.reason == "invalid_event"
    assert exc.errors == [{"loc": ["customer_id"], "msg": "Field required", "type": "missing"}]


def test_decode_customer_id_over_128_chars_names_field(decoder: EventDecoder) -> None:
    assert decoder.decode(raw(payload(customer_id="c" * 128)), NOW_MS).customer_id == "c" * 128

    exc = rejection(decoder, raw(payload(customer_id="c" * 129)))

    assert exc.reason == "invalid_event"
    assert locs(exc) == [["customer_id"]]
    assert exc.errors[0]["type"] == "string_too_long"


@pytest.mark.parametrize("bad", ["c\x001", "c\n1", "c\x7f1"])
def test_decode_customer_id_with_control_char_names_field(decoder: EventDecoder, bad: str) -> None:
    exc = rejection(decoder, raw(payload(customer_id=bad)))

    assert exc.reason == "invalid_event"
    assert locs(exc) == [["customer_id"]]
    assert exc.errors[0]["type"] == "string_pattern_mismatch"


def test_decode_unknown_top_level_field_is_forbidden(decoder: EventDecoder) -> None:
    exc = rejection(decoder, raw(payload(userId="u-1")))

    assert exc.reason == "invalid_event"
    assert locs(exc) == [["userId"]]
    assert exc.errors[0]["type"] == "extra_forbidden"


def test_decode_unknown_channel_names_field(decoder: EventDecoder) -> None:
    exc = rejection(decoder, raw(payload(channel="fax")))

    assert exc.reason == "invalid_event"
    assert locs(exc) == [["channel"]]
    assert exc.errors[0]["type"] == "enum"


def test_decode_naive_timestamp_names_field(decoder: EventDecoder) -> None:
    exc = rejection(decoder, raw(payload(timestamp="2026-03-01T09:00:00")))

    assert exc.reason == "invalid_event"
    assert locs(exc) == [["timestamp"]]
    assert exc.errors[0]["type"] == "timezone_aware"


def test_decode_unknown_event_type_reason_unknown_event_type(decoder: EventDecoder) -> None:
    exc = rejection(decoder, raw(payload(type="call_booked")))

    assert exc.reason == "unknown_event_type"
    assert locs(exc) == [["type"]]
    assert "call_booked" in exc.errors[0]["msg"]


def test_decode_custom_type_with_b2b_types_accepted(b2b_map: JourneyMap) -> None:
    b2b = EventDecoder(b2b_map.event_types)

    event = b2b.decode(raw(payload(type="call_booked", channel="call")), NOW_MS)

    assert event.type == "call_booked"


@pytest.mark.parametrize("event_type", ["product_view", "add_to_cart", "remove_from_cart"])
def test_decode_product_type_without_product_id_names_property(
    decoder: EventDecoder, event_type: str
) -> None:
    exc = rejection(decoder, raw(payload(type=event_type, properties={"price": 1.0})))

    assert exc.reason == "invalid_event"
    assert locs(exc) == [["properties", "product_id"]]


@pytest.mark.parametrize("event_type", ["recommendation_view", "recommendation_click"])
def test_decode_feedback_without_recommendation_id_names_property(
    decoder: EventDecoder, event_type: str
) -> None:
    exc = rejection(decoder, raw(payload(type=event_type, properties={"product_id": "p"})))

    assert exc.reason == "invalid_event"
    assert locs(exc) == [["properties", "recommendation_id"]]


def test_decode_feedback_keeps_recommendation_id(decoder: EventDecoder) -> None:
    rec = "accessory:r-1:2"
    event = decoder.decode(
        raw(payload(type="recommendation_click", properties={"recommendation_id": rec})), NOW_MS
    )

    assert event.properties.recommendation_id == rec


def test_decode_non_product_type_without_product_id_accepted(decoder: EventDecoder) -> None:
    event = decoder.decode(raw(payload(type="purchase", properties={"price": 10})), NOW_MS)

    assert event.properties.product_id is None


def test_decode_negative_price_names_property(decoder: EventDecoder) -> None:
    exc = rejection(decoder, raw(with_props(price=-0.01)))

    assert exc.reason == "invalid_event"
    assert locs(exc) == [["properties", "price"]]


def test_decode_quantity_zero_names_property(decoder: EventDecoder) -> None:
    exc = rejection(decoder, raw(with_props(quantity=0)))

    assert exc.reason == "invalid_event"
    assert locs(exc) == [["properties", "quantity"]]


def test_decode_too_many_extra_property_keys_names_properties(decoder: EventDecoder) -> None:
    at_limit = {f"k{i}": i for i in range(MAX_EXTRA_KEYS)}
    over = {f"k{i}": i for i in range(MAX_EXTRA_KEYS + 1)}
    assert decoder.decode(raw(payload(properties={"product_id": "p", **at_limit})), NOW_MS)

    exc = rejection(decoder, raw(payload(properties={"product_id": "p", **over})))

    assert exc.reason == "invalid_event"
    assert locs(exc) == [["properties"]]
    assert exc.errors[0]["type"] == "too_many_keys"


def test_decode_too_many_extra_property_bytes_names_properties(decoder: EventDecoder) -> None:
    exc = rejection(decoder, raw(with_props(note="x" * MAX_EXTRA_BYTES)))

    assert exc.reason == "invalid_event"
    assert locs(exc) == [["properties"]]
    assert exc.errors[0]["type"] == "too_large"


def test_decode_event_over_max_bytes_reason_event_too_large() -> None:
    small = EventDecoder(frozenset(CANONICAL_TYPES), max_event_bytes=1024)
    data = raw(with_props(note="x" * 1500))
    assert len(data) > 1024

    exc = rejection(small, data)

    assert exc.reason == "event_too_large"
    assert locs(exc) == [[]]


def test_decode_timestamp_too_far_in_future_reason_timestamp_in_future() -> None:
    decoder = EventDecoder(frozenset(CANONICAL_TYPES), max_future_skew_ms=60_000)
    assert decoder.decode(raw(payload(timestamp="2026-03-01T09:01:00Z")), NOW_MS)

    exc = rejection(decoder, raw(payload(timestamp="2026-03-01T09:01:01Z")))

    assert exc.reason == "timestamp_in_future"
    assert locs(exc) == [["timestamp"]]


def test_decode_old_timestamp_accepted(decoder: EventDecoder) -> None:
    event = decoder.decode(raw(payload(timestamp="2019-01-01T00:00:00Z")), NOW_MS)

    assert event.timestamp_ms < NOW_MS


# --- HTTP bodies --------------------------------------------------------------------------


def test_decode_batch_array_of_two_valid_events_returns_both(decoder: EventDecoder) -> None:
    body = raw([VALID, payload(event_id="e-2", type="page_view", properties=...)])

    events = decoder.decode_batch(body, NOW_MS)

    assert [e.event_id for e in events] == ["e-1", "e-2"]


def test_decode_batch_structural_error_in_element_1_names_index(decoder: EventDecoder) -> None:
    body = raw([VALID, payload(event_id="e-2", channel="fax")])

    exc = rejection(decoder, body, batch=True)

    assert exc.reason == "invalid_event"
    assert locs(exc) == [["body", 1, "channel"]]


def test_decode_batch_contract_error_in_element_1_names_index(decoder: EventDecoder) -> None:
    body = raw([VALID, payload(event_id="e-2", type="product_view", properties={})])

    exc = rejection(decoder, body, batch=True)

    assert exc.reason == "invalid_event"
    assert locs(exc) == [["body", 1, "properties", "product_id"]]


def test_decode_batch_unknown_type_in_element_1_names_index(decoder: EventDecoder) -> None:
    body = raw([VALID, payload(event_id="e-2", type="call_booked")])

    exc = rejection(decoder, body, batch=True)

    assert exc.reason == "unknown_event_type"
    assert locs(exc) == [["body", 1, "type"]]


def test_decode_batch_empty_array_rejected(decoder: EventDecoder) -> None:
    exc = rejection(decoder, b"[]", batch=True)

    assert exc.reason == "invalid_event"
    assert locs(exc) == [["body"]]
    assert exc.errors[0]["type"] == "too_short"


def test_decode_batch_over_max_batch_rejected(decoder: EventDecoder) -> None:
    events = [payload(event_id=f"e-{i}") for i in range(MAX_BATCH + 1)]
    assert len(decoder.decode_batch(raw(events[:MAX_BATCH]), NOW_MS)) == MAX_BATCH

    exc = rejection(decoder, raw(events), batch=True)

    assert exc.reason == "invalid_event"
    assert locs(exc) == [["body"]]
    assert exc.errors[0]["type"] == "too_long"


def test_decode_batch_single_object_returns_one_event(decoder: EventDecoder) -> None:
    events = decoder.decode_batch(b"  \n" + raw(VALID), NOW_MS)

    assert [e.event_id for e in events] == ["e-1"]


def test_decode_batch_single_object_error_prefixed_with_body(decoder: EventDecoder) -> None:
    exc = rejection(decoder, raw(payload(customer_id=...)), batch=True)

    assert exc.reason == "invalid_event"
    assert locs(exc) == [["body", "customer_id"]]


def test_decode_batch_single_object_contract_error_prefixed_with_body(
    decoder: EventDecoder,
) -> None:
    exc = rejection(decoder, raw(payload(type="call_booked")), batch=True)

    assert exc.reason == "unknown_event_type"
    assert locs(exc) == [["body", "type"]]


def test_decode_batch_invalid_json_reason_invalid_json(decoder: EventDecoder) -> None:
    exc = rejection(decoder, b"[{", batch=True)

    assert exc.reason == "invalid_json"
    assert locs(exc)[0][0] == "body"


def test_decode_batch_single_object_over_max_bytes_reason_event_too_large() -> None:
    small = EventDecoder(frozenset(CANONICAL_TYPES), max_event_bytes=1024)

    exc = rejection(small, raw(with_props(note="x" * 1500)), batch=True)

    assert exc.reason == "event_too_large"
    assert locs(exc) == [["body"]]


def test_decode_batch_array_element_over_max_bytes_reason_event_too_large() -> None:
    # The same oversized event is rejected by `decode` (Kafka path, see above) and when
    # posted alone; posted inside an array it must be rejected too, or the HTTP path would
    # accept events that the consumer then refuses.
    small = EventDecoder(frozenset(CANONICAL_TYPES), max_event_bytes=1024)
    big = with_props(note="x" * 1500)

    exc = rejection(small, raw([VALID, big]), batch=True)

    assert exc.reason == "event_too_large"
    assert locs(exc) == [["body", 1]]


# --- JSON Schema --------------------------------------------------------------------------


def test_event_json_schema_is_valid_draft_2020_12() -> None:
    schema = event_json_schema()

    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["type"]["enum"] == list(CANONICAL_TYPES)


def test_event_json_schema_accepts_valid_examples() -> None:
    schema = event_json_schema()
    validator = Draft202012Validator(schema)

    assert schema["examples"]
    for example in [*schema["examples"], VALID]:
        assert list(validator.iter_errors(example)) == []
        Event.model_validate(example)  # the schema's example obeys the model too


def test_event_json_schema_rejects_unknown_channel() -> None:
    validator = Draft202012Validator(event_json_schema())

    errors = list(validator.iter_errors(payload(channel="fax")))

    assert [list(e.absolute_path) for e in errors] == [["channel"]]


def test_event_json_schema_rejects_unknown_top_level_field_and_type() -> None:
    validator = Draft202012Validator(event_json_schema())

    assert not validator.is_valid(payload(userId="u-1"))
    assert not validator.is_valid(payload(type="call_booked"))


def test_event_json_schema_with_b2b_types_lists_custom_type(b2b_map: JourneyMap) -> None:
    schema = event_json_schema(b2b_map.event_types)
    validator = Draft202012Validator(schema)

    assert "call_booked" in schema["properties"]["type"]["enum"]
    assert schema["properties"]["type"]["enum"] == sorted(b2b_map.event_types)
    assert validator.is_valid(payload(type="call_booked"))


def test_timestamp_ms_millisecond_timestamp_exact() -> None:
    # `timestamp_ms` is "event time as integer milliseconds since the epoch"; computing it as
    # int(float_seconds * 1000) truncates 1073741829.649 * 1000 == 1073741829648.9999 to ...648.
    event = Event.model_validate(payload(timestamp="2004-01-10T13:37:09.649Z"))

    assert event.timestamp_ms == 1_073_741_829_649


@pytest.mark.parametrize("props", [{}, {"personalization": None}])
def test_decode_consent_without_personalization_names_property(
    decoder: EventDecoder, props: dict[str, Any]
) -> None:
    exc = rejection(decoder, raw(payload(type="consent_updated", properties=props)))

    assert locs(exc) == [["properties", "personalization"]]


def test_decode_consent_rejects_a_non_boolean_personalization(decoder: EventDecoder) -> None:
    data = payload(type="consent_updated", properties={"personalization": "maybe"})

    assert locs(rejection(decoder, raw(data))) == [["properties", "personalization"]]


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, {"deep": [2**70]}])
def test_extras_with_integers_past_64_bits_are_refused_naming_properties(
    decoder: EventDecoder, batch: bool, value: Any
) -> None:
    data = json.dumps(with_props(note=value)).encode()
    body = b"[" + data + b"]" if batch else data

    exc = rejection(decoder, body, batch=batch)

    where = ["body", 0, "properties"] if batch else ["properties"]
    assert locs(exc) == [where]


def test_decode_boolean_price_is_refused_not_read_as_one(decoder: EventDecoder) -> None:
    exc = rejection(decoder, raw(with_props(price=True)))

    assert locs(exc) == [["properties", "price"]]
    assert decoder.decode(raw(with_props(price=3)), NOW_MS).properties.price == 3.0
