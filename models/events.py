"""The event contract: what storefronts, apps, email and ad platforms send, and how it is checked.

`EventDecoder` is the single gate for both paths (HTTP and Kafka): it turns bytes into a
validated `Event` or raises `InvalidEvent` with field-level errors and a stable reason.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Final

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)

from models.errors import InvalidEvent

CANONICAL_TYPES: Final[tuple[str, ...]] = (
    "page_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "checkout_started",
    "purchase",
    "email_open",
    "email_click",
    "ad_click",
    "social_engagement",
    "review_read",
    "review_written",
    "referral",
    "support_contact",
    "app_open",
    "store_visit",
    "recommendation_view",
    "recommendation_click",
    "consent_updated",
    "experiment_exposure",
)
"""Event types every journey map understands; a map may add its own."""

PRODUCT_TYPES: Final[frozenset[str]] = frozenset(
    {"product_view", "add_to_cart", "remove_from_cart"}
)
"""Types that make no sense without `properties.product_id`."""

FEEDBACK_TYPES: Final[frozenset[str]] = frozenset({"recommendation_view", "recommendation_click"})
"""A storefront reporting a served recommendation back; needs `properties.recommendation_id`."""

EXPOSURE_TYPE: Final = "experiment_exposure"
"""A customer was shown an experiment's variant; needs `properties.exposure`. Bookkeeping: it
opens the experiment's outcome window and is not a touchpoint of the journey."""

CONSENT_TYPE: Final = "consent_updated"
"""The customer gave or withdrew consent to personalization; needs `properties.personalization`."""

TYPE_PATTERN: Final = r"^[a-z][a-z0-9_]{0,63}$"
MAX_EXTRA_KEYS: Final = 32
MAX_EXTRA_BYTES: Final = 4096
MAX_BATCH: Final = 1000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ms(moment: datetime) -> int:
    """An aware time as integer milliseconds since the epoch: exact (no float rounding), and by
    subtraction, which cannot overflow near the years 1 and 9999 as `astimezone` can."""
    delta = moment - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


class Channel(StrEnum):
    """Where the customer was when the event happened."""

    web = "web"
    app = "app"
    email = "email"
    ads = "ads"
    social = "social"
    store = "store"
    chat = "chat"
    call = "call"
    other = "other"


ID_PATTERN: Final = r"^[^\x00-\x1f\x7f]+$"
"""Identifiers (customer, event, product, order ids): no control characters."""
Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=ID_PATTERN)]


class Exposure(BaseModel):
    """Which variant of which experiment the customer was shown, and what counts as success."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    variant: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    success: list[Annotated[str, Field(pattern=TYPE_PATTERN)]] = Field(
        min_length=1, max_length=8, description="Event types that count as a conversion."
    )
    window_s: int = Field(ge=60, le=90 * 86_400, description="How long a conversion counts.")
    context: str = Field(default="all", min_length=1, max_length=128)


class EventProperties(BaseModel):
    """What the event concerns. Known keys are typed; up to 32 extra keys (4 KiB) are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    product_id: Identifier | None = None
    category: str | None = Field(default=None, min_length=1, max_length=256)
    price: float | None = Field(default=None, ge=0, le=1e9, allow_inf_nan=False, strict=True)
    quantity: int | None = Field(default=None, ge=1, le=10_000)
    order_id: Identifier | None = None
    url: str | None = Field(default=None, max_length=2048)
    dwell_ms: int | None = Field(default=None, ge=0, le=86_400_000)
    recommendation_id: Identifier | None = Field(
        default=None, description="The `id` of a served recommendation (feedback events)."
    )
    personalization: bool | None = Field(
        default=None,
        description="consent_updated: false opts the customer out of predictions, "
        "recommendations and triggers; true opts back in.",
    )
    exposure: Exposure | None = Field(
        default=None, description="experiment_exposure: the decision that was shown."
    )


class Event(BaseModel):
    """One customer event. `timestamp` is event time (RFC 3339 with an offset).

    The model checks structure; `EventDecoder` adds the rules that need context (the map's
    types, future skew) or that pydantic would report without a precise location.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        use_enum_values=True,  # `channel` holds the plain string: cheaper on the hot path
        json_schema_extra={
            "examples": [
                {
                    "event_id": "0b7c5d1e-6a0f-4a53-9d0e-3c1f1b6a2f10",
                    "customer_id": "c-1042",
                    "type": "add_to_cart",
                    "channel": "web",
                    "timestamp": "2026-11-23T10:15:00Z",
                    "session_id": "s-77",
                    "properties": {"product_id": "sku-1", "price": 49.9, "quantity": 1},
                }
            ]
        },
    )

    event_id: Identifier = Field(description="Client-supplied unique id; retries reuse it.")
    customer_id: Identifier
    type: str = Field(
        pattern=TYPE_PATTERN,
        description="A canonical type or one the journey map adds. "
        "product_view, add_to_cart and remove_from_cart need properties.product_id; "
        "recommendation_view and recommendation_click need properties.recommendation_id; "
        "consent_updated needs properties.personalization.",
    )
    channel: Channel
    timestamp: AwareDatetime = Field(description="Event time, RFC 3339 with an offset.")
    session_id: Identifier | None = None
    properties: EventProperties = Field(default_factory=EventProperties)

    @cached_property
    def timestamp_ms(self) -> int:
        """Event time as `epoch_ms`. Cached: a consumer reads it several times per event, and
        each computation converts the aware datetime through its time zone."""
        return epoch_ms(self.timestamp)

    def to_json(self) -> bytes:
        """Canonical wire form: what the API produces to Kafka."""
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))


_MANY: Final = TypeAdapter(Annotated[list[Event], Field(min_length=1, max_length=MAX_BATCH)])


def _public(errors: list[Any], prefix: list[str | int]) -> list[dict[str, Any]]:
    return [{"loc": [*prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in errors]


def _invalid(exc: ValidationError, prefix: list[str | int]) -> InvalidEvent:
    errors = _public(exc.errors(include_url=False), prefix)
    json_broken = any(e["type"] in ("json_invalid", "json_type") for e in errors)
    return InvalidEvent("invalid_json" if json_broken else "invalid_event", errors)


class EventDecoder:
    """Validates raw event bytes against the contract and the active journey map's types."""

    def __init__(
        self,
        event_types: frozenset[str],
        *,
        max_event_bytes: int = 32_768,
        max_future_skew_ms: int = 86_400_000,
    ) -> None:
        self._types = event_types
        self._max_bytes = max_event_bytes
        self._max_skew = max_future_skew_ms

    def decode(self, raw: bytes | None, now_ms: int) -> Event:
        """One event from its JSON bytes (a Kafka record value); raises `InvalidEvent`."""
        if not raw:
            raise InvalidEvent("empty", [_err([], "record has no value", "empty")])
        self._check_size(len(raw), [])
        try:
            event = Event.model_validate_json(raw)
        except ValidationError as exc:
            raise _invalid(exc, []) from None
        self.check(event, now_ms, [])
        return event

    def decode_batch(self, raw: bytes, now_ms: int) -> list[Event]:
        """An HTTP body: one event object or an array of 1 to `MAX_BATCH` events."""
        if raw.lstrip()[:1] != b"[":
            self._check_size(len(raw), ["body"])
            try:
                event = Event.model_validate_json(raw)
            except ValidationError as exc:
                raise _invalid(exc, ["body"]) from None
            self.check(event, now_ms, ["body"])
            return [event]
        try:
            events = _MANY.validate_json(raw)
        except ValidationError as exc:
            raise _invalid(exc, ["body"]) from None
        errors: list[dict[str, Any]] = []
        for index, event in enumerate(events):
            try:
                self.check(event, now_ms, ["body", index])  # first: extras must encode
                self._check_size(len(event.to_json()), ["body", index])
            except InvalidEvent as exc:
                errors.extend(exc.errors)
                reason = exc.reason
        if errors:
            raise InvalidEvent(reason, errors)
        return events

    def check(self, event: Event, now_ms: int, loc: list[str | int]) -> None:
        """The rules beyond structure; each failure names its field."""
        if event.type not in self._types:
            msg = (
                f"unknown event type {event.type!r}; this journey map accepts {sorted(self._types)}"
            )
            raise InvalidEvent(
                "unknown_event_type", [_err([*loc, "type"], msg, "unknown_event_type")]
            )
        props = event.properties
        if props.product_id is None and event.type in PRODUCT_TYPES:
            msg = f"required for {event.type}"
            raise InvalidEvent(
                "invalid_event", [_err([*loc, "properties", "product_id"], msg, "missing")]
            )
        if props.recommendation_id is None and event.type in FEEDBACK_TYPES:
            msg = f"required for {event.type}"
            raise InvalidEvent(
                "invalid_event", [_err([*loc, "properties", "recommendation_id"], msg, "missing")]
            )
        if props.personalization is None and event.type == CONSENT_TYPE:
            msg = f"required for {event.type} (true or false)"
            raise InvalidEvent(
                "invalid_event", [_err([*loc, "properties", "personalization"], msg, "missing")]
            )
        if props.exposure is None and event.type == EXPOSURE_TYPE:
            msg = f"required for {event.type}"
            raise InvalidEvent(
                "invalid_event", [_err([*loc, "properties", "exposure"], msg, "missing")]
            )
        extra = props.__pydantic_extra__
        if extra:
            self._check_extras(extra, [*loc, "properties"])
        if event.timestamp_ms - now_ms > self._max_skew:
            ahead = self._max_skew // 1000
            msg = f"{event.timestamp.isoformat()} is more than {ahead} s in the future"
            raise InvalidEvent("timestamp_in_future", [_err([*loc, "timestamp"], msg, "in_future")])

    def _check_extras(self, extra: dict[str, Any], loc: list[str | int]) -> None:
        if len(extra) > MAX_EXTRA_KEYS:
            msg = f"at most {MAX_EXTRA_KEYS} extra keys are allowed, got {len(extra)}"
            raise InvalidEvent("invalid_event", [_err(loc, msg, "too_many_keys")])
        try:
            size = len(orjson.dumps(extra))
        except orjson.JSONEncodeError as exc:  # integers past 64 bits, nesting past 255
            msg = f"extra keys must hold 64-bit integers and nest at most 255 deep: {exc}"
            raise InvalidEvent("invalid_event", [_err(loc, msg, "not_encodable")]) from None
        if size > MAX_EXTRA_BYTES:
            msg = f"extra keys take {size} bytes as JSON; the limit is {MAX_EXTRA_BYTES}"
            raise InvalidEvent("invalid_event", [_err(loc, msg, "too_large")])

    def _check_size(self, size: int, loc: list[str | int]) -> None:
        if size > self._max_bytes:
            msg = f"event is {size} bytes; the limit is {self._max_bytes}"
            raise InvalidEvent("event_too_large", [_err(loc, msg, "too_large")])


def _err(loc: list[str | int], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


def event_json_schema(event_types: frozenset[str] | None = None) -> dict[str, Any]:
    """JSON Schema of one event; with `event_types`, `type` is the map's closed list."""
    schema = Event.model_json_schema()
    types = sorted(event_types) if event_types is not None else list(CANONICAL_TYPES)
    schema["properties"]["type"]["enum"] = types
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Parcours event"
    return schema
