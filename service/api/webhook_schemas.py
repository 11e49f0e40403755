"""Webhook subscription requests and responses. A secret is never echoed back, except the one
Parcours generated, in the response that created (or rotated) it."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, StringConstraints

from models.triggers import TriggerType
from models.webhooks import Filter, Subscription
from service.targets import MAX_URL_LENGTH

_SECRET_ALPHABET = re.compile(r"[\x21-\x7e]+")

StageName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Url = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        description="https endpoint on a public address; credentials in the URL are refused",
        examples=["https://crm.example.com/hooks/parcours"],
    ),
]
Triggers = Annotated[
    list[TriggerType],
    Field(max_length=20, description="trigger types to receive; empty receives every type"),
]


def _printable(secret: SecretStr) -> SecretStr:
    if not _SECRET_ALPHABET.fullmatch(secret.get_secret_value()):
        raise ValueError("the secret must be printable ASCII without spaces")
    return secret


Secret = Annotated[
    SecretStr,
    Field(
        min_length=16,
        max_length=256,
        description="16-256 printable ASCII characters, no spaces: the HMAC key for signatures",
    ),
    AfterValidator(_printable),
]
Description = Annotated[
    str | None, Field(max_length=500, description="for the people who manage it; not sent")
]


class WebhookFilter(BaseModel):
    """Narrows a subscription: both conditions must hold when both are given."""

    model_config = ConfigDict(extra="forbid")

    min_cart_value: float | None = Field(
        default=None,
        strict=True,
        ge=0,
        allow_inf_nan=False,
        description="only triggers with a cart this big",
    )
    stages: list[StageName] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="only triggers in these stages of the active journey map; null: any stage",
        examples=[["consideration", "decision"]],
    )

    def to_filter(self) -> Filter:
        stages = frozenset(self.stages) if self.stages is not None else None
        return Filter(min_cart_value=self.min_cart_value, stages=stages)

    @classmethod
    def from_filter(cls, f: Filter) -> WebhookFilter:
        stages = sorted(f.stages) if f.stages is not None else None
        return cls(min_cart_value=f.min_cart_value, stages=stages)


class WebhookCreate(BaseModel):
    """A new subscription. Without a `secret`, Parcours generates one and returns it once."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://crm.example.com/hooks/parcours",
                    "triggers": ["cart.abandoned", "customer.converted"],
                    "filter": {"min_cart_value": 50, "stages": ["decision"]},
                    "description": "CRM: win back abandoned carts over 50",
                }
            ]
        },
    )

    url: Url
    triggers: Triggers = Field(default_factory=list)
    filter: WebhookFilter | None = Field(default=None, description="null: no narrowing")
    secret: Secret | None = None
    enabled: bool = True
    description: Description = None


def _update_schema(schema: dict[str, Any]) -> None:
    """A left-out field keeps its value, so the documented defaults would mislead: drop them."""
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)
    schema["examples"] = [{"enabled": False}, {"rotate_secret": True}, {"filter": None}]


class WebhookUpdate(BaseModel):
    """Changes to a subscription: fields left out keep their value.

    `filter` replaces the whole filter (null clears it), `description` null clears it.
    Rotate the signing key with a `secret` of your own, or `rotate_secret: true` to have
    Parcours generate one (returned once, in this response).
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=_update_schema)

    # Defaults below only stand for "left out" (see `changes`); null is refused for these.
    url: Url = ""
    triggers: Triggers = Field(default_factory=list)
    filter: WebhookFilter | None = None
    secret: Secret = SecretStr("")
    rotate_secret: bool = Field(default=False, description="generate a new secret")
    enabled: bool = True
    description: Description = None

    def changes(self) -> dict[str, Any]:
        """`Subscription` fields to replace, for the fields the request gave."""
        given = self.model_fields_set - {"rotate_secret"}
        out: dict[str, Any] = {}
        for name in given:
            value = getattr(self, name)
            if name == "triggers":
                value = frozenset(value)
            elif name == "filter":
                value = value.to_filter() if value is not None else Filter()
            elif name == "secret":
                value = value.get_secret_value()
            out[name] = value
        return out


class WebhookPublic(BaseModel):
    """A subscription as the API shows it: the secret itself is never returned."""

    id: str = Field(examples=["wh_5f0c1e9a2b7d4c3e8a6f1b2d"])
    url: str
    triggers: list[TriggerType] = Field(description="empty: every trigger type")
    filter: WebhookFilter
    enabled: bool
    description: str | None
    created_at: datetime
    secret_set: bool = Field(description="a signing secret is configured")
    secret_last4: str | None = Field(description="its last 4 characters, to tell secrets apart")

    @classmethod
    def from_subscription(cls, sub: Subscription) -> WebhookPublic:
        return cls.model_validate(_public_fields(sub))


class WebhookSecretPublic(WebhookPublic):
    """The subscription, with the secret Parcours generated: shown in this response only."""

    secret: str | None = Field(
        description="the generated secret; store it now, it is never shown again. "
        "null when you supplied the secret (or did not rotate it)"
    )

    @classmethod
    def issued(cls, sub: Subscription, *, generated: bool) -> WebhookSecretPublic:
        return cls.model_validate(
            _public_fields(sub) | {"secret": sub.secret if generated else None}
        )


class WebhooksPublic(BaseModel):
    webhooks: list[WebhookPublic] = Field(description="oldest first")


def _public_fields(sub: Subscription) -> dict[str, Any]:
    return {
        "id": sub.id,
        "url": sub.url,
        "triggers": sorted(sub.triggers),
        "filter": WebhookFilter.from_filter(sub.filter),
        "enabled": sub.enabled,
        "description": sub.description,
        "created_at": datetime.fromtimestamp(sub.created_at / 1000, UTC),
        "secret_set": bool(sub.secret),
        "secret_last4": sub.secret[-4:] if sub.secret else None,
    }
