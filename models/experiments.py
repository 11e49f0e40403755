"""Experiments: what is tested where, which variant a customer gets, and what then happened.

An experiment names a decision point (a recommendation action type, a webhook trigger type,
or a custom decision the storefront asks for), its variants, the success event types and
the window in which one counts. A customer's first exposure fixes their variant
(`Assignment`, kept in the journey) and opens their outcome: converted when a success event
arrives within the window, missed when event time passes its end. Everything here is a
function of its arguments, so a replay assigns and resolves exactly as the first run did.

Variants come from a fixed split (hashing the customer id: the same customer always gets the
same variant, in any process) or from a bandit (`models.experiment_stats`). The holdout is a
fixed share of customers, also by hash, who get no personalization at all; they and the
others are compared as the built-in experiment `holdout`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Annotated, Any, Final, Literal, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

HOLDOUT: Final = "holdout"
"""The built-in experiment: variant `holdout` gets no personalization, `personalized` does."""
HOLDOUT_VARIANTS: Final = ("personalized", HOLDOUT)
EXPOSURE_TYPE: Final = "experiment_exposure"
"""The event that records a decision made outside the consumers (API, storefront)."""
ALL: Final = "all"
"""The context of a decision that is not contextual."""
RISK_BANDS: Final = ((0.3, "low"), (0.7, "medium"), (1.01, "high"))

MAX_PARAMS_BYTES: Final = 2048

Policy = Literal["split", "thompson", "ucb"]
Status = Literal["open", "converted", "missed"]
NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=NAME_PATTERN)]
DECISION_PATTERN: Final = r"^(recommendation|webhook|custom):[a-z0-9_.]{1,64}$"


class Variant(BaseModel):
    """One arm: its name, its share of a fixed split, and what the caller should do."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    weight: float = Field(
        default=1.0, gt=0, le=1e6, strict=True, description="Relative share (split only)."
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Returned with each decision (e.g. the offer); at most 2 KiB as JSON.",
    )

    @field_validator("params")
    @classmethod
    def _small_json(cls, params: dict[str, Any]) -> dict[str, Any]:
        try:
            size = len(orjson.dumps(params))
        except orjson.JSONEncodeError as exc:  # integers past 64 bits, nesting past 255
            raise ValueError(f"params must encode as JSON with 64-bit integers: {exc}") from None
        if size > MAX_PARAMS_BYTES:
            raise ValueError(f"params take {size} bytes as JSON; the limit is {MAX_PARAMS_BYTES}")
        return params


class ExperimentSpec(BaseModel):
    """An experiment as defined through `PUT /v1/experiments/{name}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decision: str = Field(
        pattern=DECISION_PATTERN,
        description="`recommendation:<action type>`, `webhook:<trigger type>` or "
        "`custom:<name>` (asked for with `POST /v1/experiments/{name}/decisions`).",
        examples=["recommendation:abandoned_cart_reminder", "webhook:cart.abandoned"],
    )
    variants: list[Variant] = Field(min_length=2, max_length=16)
    success: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]] = Field(
        default_factory=lambda: ["purchase"], min_length=1, max_length=8
    )
    window_s: int = Field(default=86_400, ge=60, le=90 * 86_400)
    policy: Policy = "split"
    contextual: bool = Field(
        default=False, description="Bandits only: learn per stage and abandonment-risk band."
    )
    active: bool = True

    @model_validator(mode="after")
    def _distinct(self) -> ExperimentSpec:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be distinct")
        if self.contextual and self.policy == "split":
            raise ValueError("contextual applies to bandit policies (thompson, ucb) only")
        return self

    @property
    def point(self) -> tuple[str, str]:
        """The decision point as (kind, key), e.g. ("webhook", "cart.abandoned")."""
        kind, _, key = self.decision.partition(":")
        return kind, key

    @property
    def variant_names(self) -> list[str]:
        return [v.name for v in self.variants]

    def params_of(self, variant: str) -> dict[str, Any]:
        return next((v.params for v in self.variants if v.name == variant), {})


class Assignment(NamedTuple):
    """A customer's variant in one experiment and the outcome window it opened."""

    variant: str
    at: int  # event time of the first exposure (ms)
    until: int  # end of the success window (ms)
    success: tuple[str, ...]
    context: str
    status: Status = "open"
    announced: bool = False  # its exposure was counted (published as a sample)


def unit_interval(customer_id: str, salt: str) -> float:
    """A uniform number in [0, 1) fixed by the customer and the salt, in every process."""
    digest = hashlib.blake2b(f"{salt}\x00{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split(spec: ExperimentSpec, name: str, customer_id: str) -> str:
    """The fixed-split variant: weights partition [0, 1), the customer's hash picks a part."""
    point = unit_interval(customer_id, name) * sum(v.weight for v in spec.variants)
    for variant in spec.variants:
        point -= variant.weight
        if point < 0:
            return variant.name
    return spec.variants[-1].name


def in_holdout(customer_id: str, share: float) -> bool:
    """Whether the customer belongs to the holdout group of `share` of all customers."""
    return share > 0 and unit_interval(customer_id, HOLDOUT) < share


def context_of(stage: str, risk: float | None) -> str:
    """A contextual bandit's context: the stage and the abandonment-risk band."""
    if risk is None:
        return f"{stage}|no_cart"
    band = next(name for bound, name in RISK_BANDS if risk < bound)
    return f"{stage}|{band}"


def expose(
    assignments: dict[str, Assignment],
    name: str,
    variant: str,
    at: int,
    *,
    window_ms: int,
    success: Sequence[str],
    context: str = ALL,
) -> bool:
    """Record a first exposure; False (and nothing changes) if the customer has a variant."""
    if name in assignments:
        return False
    assignments[name] = Assignment(variant, at, at + window_ms, tuple(success), context)
    return True


class Outcome(NamedTuple):
    """What one exposure came to: `converted` None means it was just opened."""

    experiment: str
    variant: str
    context: str
    at: int
    resolved_at: int
    converted: bool | None


def announce(assignments: dict[str, Assignment]) -> list[Outcome]:
    """The exposures not yet counted, each counted once (it is marked announced)."""
    opened = []
    for name, a in assignments.items():
        if not a.announced:
            assignments[name] = a._replace(announced=True)
            opened.append(Outcome(name, a.variant, a.context, a.at, a.at, None))
    return opened


def resolve(assignments: dict[str, Assignment], event_type: str, t: int) -> list[Outcome]:
    """What an event at `t` decides: a success in the window converts, any event after the
    window ends it as missed. An event older than the exposure decides nothing."""
    done = []
    for name, a in assignments.items():
        if a.status != "open" or t < a.at:
            continue
        if t > a.until:
            done.append(_close(assignments, name, a, a.until, converted=False))
        elif event_type in a.success:
            done.append(_close(assignments, name, a, t, converted=True))
    return done


def expire(assignments: dict[str, Assignment], until_ms: int) -> list[Outcome]:
    """Close as missed every window that ended before `until_ms` (the watermark's lag)."""
    return [
        _close(assignments, name, a, a.until, converted=False)
        for name, a in list(assignments.items())
        if a.status == "open" and a.until < until_ms
    ]


def due(assignments: dict[str, Assignment]) -> int | None:
    """The earliest window end still waiting for its outcome."""
    return min((a.until for a in assignments.values() if a.status == "open"), default=None)


def _close(
    assignments: dict[str, Assignment], name: str, a: Assignment, at: int, *, converted: bool
) -> Outcome:
    assignments[name] = a._replace(status="converted" if converted else "missed")
    return Outcome(name, a.variant, a.context, a.at, at, converted)
