"""Training labels, resolved on event time: what happened after each prediction.

Every applied event is a prediction point. Its features are kept in the customer's
`LabelBook` until the outcome is known, then leave as a `Sample` (features + label):

- next stage: the first stage the customer moves to within `horizon` of the event; if none,
  the current stage when they were active again within the horizon ("stayed"), else `exit`.
- abandonment (only while the cart holds items): `False` (converted) when a purchase arrives
  by the cart's deadline, `True` (abandoned) when none does. The deadline is the last cart
  activity plus `abandon_after`; a customer who returns to a cart already labelled abandoned
  starts a new episode with its own deadline.

An outcome is decided by the customer's own events when one arrives, and otherwise by the
partition's watermark (newest event time seen, minus the allowed lateness) passing a deadline.
Both use event time only, so a replay yields the same labels at any speed and batching.
A late event (older than a pending prediction) never resolves that prediction and never
moves a cart deadline back. `next_stage_rate` keeps a deterministic share of the events as
next-stage prediction points (by event digest, so replays keep the same ones), for streams
faster than one trainer learns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple

import orjson

from models.experiments import Outcome
from models.journeymap import EXIT
from models.state import JourneyState

NEXT_STAGE: Final = "next_stage"
ABANDONMENT: Final = "abandonment"
EXPOSURE: Final = "exposure"
OUTCOME: Final = "outcome"
EXPERIMENT_KINDS: Final = frozenset({EXPOSURE, OUTCOME})
CART_ACTIVITY: Final = frozenset(
    {"add_to_cart", "remove_from_cart", "checkout_started", "purchase"}
)

_DIGEST_SPACE: Final = 16**12  # event digests are 12 hex digits (`models.fold.event_digest`)

Kind = Literal["next_stage", "abandonment", "exposure", "outcome"]
Label = bool | str
FeatureFn = Callable[[JourneyState, int], list[float]]


class Pending(NamedTuple):
    """A prediction waiting for its outcome: the event's digest, time, stage and features."""

    id: str
    at: int
    stage: str
    x: list[float]
    followed: bool = False  # next stage: the customer was active again within the horizon


@dataclass(slots=True)
class LabelBook:
    """One customer's unresolved predictions, stored beside the journey in Redis."""

    next_stage: list[Pending] = field(default_factory=list)
    abandonment: list[Pending] = field(default_factory=list)
    cart_deadline: int | None = None

    def __bool__(self) -> bool:
        return bool(self.next_stage or self.abandonment)

    def deadline(self, horizon_ms: int) -> int | None:
        """The earliest event time at which the watermark alone would resolve something."""
        due = [p.at + horizon_ms for p in self.next_stage]
        if self.abandonment and self.cart_deadline is not None:
            due.append(self.cart_deadline)
        return min(due, default=None)


@dataclass(frozen=True, slots=True)
class Sample:
    """Features as they were at prediction time, and what then happened."""

    id: str
    kind: Kind
    customer_id: str
    journey_map: str
    at: int
    resolved_at: int
    stage: str
    x: list[float]
    label: Label
    experiment: str | None = None  # exposure and outcome samples (`models.experiments`)
    variant: str | None = None

    def to_json(self) -> bytes:
        data: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "customer_id": self.customer_id,
            "journey_map": self.journey_map,
            "at": self.at,
            "resolved_at": self.resolved_at,
            "stage": self.stage,
            "x": self.x,
            "label": self.label,
        }
        if self.experiment is not None:
            data["experiment"], data["variant"] = self.experiment, self.variant
        return orjson.dumps(data)

    def outcome(self) -> Outcome:
        """An exposure or outcome sample as the experiment ledger learns it."""
        if self.experiment is None or self.variant is None:
            raise ValueError(f"{self.kind} sample {self.id} names no experiment and variant")
        converted = None if self.kind == EXPOSURE else bool(self.label)
        return Outcome(
            self.experiment, self.variant, self.stage, self.at, self.resolved_at, converted
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Sample:
        """Raises ValueError (or KeyError/TypeError) on a record that is not a sample."""
        return cls.from_dict(orjson.loads(raw))

    @classmethod
    def from_dict(cls, data: Any) -> Sample:
        """`from_json` of parsed JSON."""
        kind = data["kind"]
        label = data["label"]
        if kind == ABANDONMENT and not isinstance(label, bool):
            raise ValueError(f"abandonment label must be a boolean, got {label!r}")
        if kind in (NEXT_STAGE, EXPOSURE) and not isinstance(label, str):
            raise ValueError(f"{kind} label must be a string, got {label!r}")
        if kind == OUTCOME and not isinstance(label, bool):
            raise ValueError(f"outcome label must be a boolean, got {label!r}")
        if kind not in (ABANDONMENT, NEXT_STAGE, EXPOSURE, OUTCOME):
            raise ValueError(f"unknown sample kind {kind!r}")
        experiment = data.get("experiment")
        if kind in EXPERIMENT_KINDS and not (
            isinstance(experiment, str) and isinstance(data.get("variant"), str)
        ):
            raise ValueError(f"{kind} sample needs experiment and variant strings")
        return cls(
            id=str(data["id"]),
            kind=kind,
            customer_id=str(data["customer_id"]),
            journey_map=str(data["journey_map"]),
            at=int(data["at"]),
            resolved_at=int(data["resolved_at"]),
            stage=str(data["stage"]),
            x=[float(v) for v in data["x"]],
            label=label,
            experiment=experiment if kind in EXPERIMENT_KINDS else None,
            variant=data["variant"] if kind in EXPERIMENT_KINDS else None,
        )


def encode_samples(samples: Sequence[Sample]) -> bytes:
    """Several samples as one record value: a JSON array of `Sample.to_json` objects."""
    return b"[" + b",".join(s.to_json() for s in samples) + b"]"


def decode_samples(raw: bytes) -> list[Sample]:
    """The samples of one record: an array (`encode_samples`) or a single sample object.

    Raises ValueError (or KeyError/TypeError) for a record that is neither.
    """
    data = orjson.loads(raw)
    return [Sample.from_dict(item) for item in (data if isinstance(data, list) else [data])]


class Resolution(NamedTuple):
    samples: list[Sample]
    dropped: int  # predictions discarded unresolved because the book was full


class Labeler:
    """Records predictions and resolves their labels; pure, the caller stores the book."""

    def __init__(
        self,
        feature_fn: FeatureFn,
        *,
        abandon_after_ms: int,
        horizon_ms: int,
        max_pending: int = 32,
        next_stage_rate: float = 1.0,
    ) -> None:
        if not 0.0 <= next_stage_rate <= 1.0:
            raise ValueError(f"next_stage_rate must be within [0, 1], got {next_stage_rate}")
        self._features = feature_fn
        self.abandon_after_ms = abandon_after_ms
        self.horizon_ms = horizon_ms
        self._max_pending = max_pending
        self._next_stage_below = round(next_stage_rate * _DIGEST_SPACE)

    def observe(
        self,
        book: LabelBook,
        prev_stage: str | None,
        state: JourneyState,
        event_type: str,
        digest: str,
        t: int,
        x: list[float] | None = None,
    ) -> Resolution:
        """Resolve what the event at `t` decides, then record it as a prediction point.

        `state` is the journey right after the event, `prev_stage` the stage before it and
        `x` its features at `t` if the caller computed them already (`features`).
        """
        if x is None:
            x = self.features(state, t)
        samples: list[Sample] = []
        self._resolve_cart(book, state, event_type, t, samples)
        self._resolve_next(book, prev_stage, state, t, samples)
        if int(digest, 16) < self._next_stage_below:
            book.next_stage.append(Pending(digest, t, state.stage, x))
        if event_type in CART_ACTIVITY:
            extended = t + self.abandon_after_ms
            current = book.cart_deadline
            if book.abandonment and current is not None:  # never moved back by a late event
                extended = max(current, extended)
            book.cart_deadline = extended
        if state.cart.items:
            if not book.abandonment:
                book.cart_deadline = t + self.abandon_after_ms
            book.abandonment.append(Pending(digest, t, state.stage, x))
        dropped = _trim(book.next_stage, self._max_pending)
        dropped += _trim(book.abandonment, self._max_pending)
        return Resolution(samples, dropped)

    def features(self, state: JourneyState, t: int) -> list[float]:
        """The compact features recorded with a prediction made at `t`."""
        return self._features(state, t)

    def expire(self, book: LabelBook, state: JourneyState, until_ms: int) -> list[Sample]:
        """Resolve every prediction whose deadline lies before `until_ms` (watermark - lateness)."""
        samples: list[Sample] = []
        deadline = book.cart_deadline
        if book.abandonment and deadline is not None and deadline < until_ms:
            samples += _resolved(book.abandonment, ABANDONMENT, state, deadline, True)
            book.abandonment.clear()
            book.cart_deadline = None
        keep: list[Pending] = []
        for p in book.next_stage:
            due = p.at + self.horizon_ms
            if due < until_ms:
                samples.append(_sample(p, NEXT_STAGE, state, due, p.stage if p.followed else EXIT))
            else:
                keep.append(p)
        book.next_stage[:] = keep
        return samples

    def _resolve_cart(
        self, book: LabelBook, state: JourneyState, event_type: str, t: int, out: list[Sample]
    ) -> None:
        if not book.abandonment:
            return
        deadline = book.cart_deadline
        if deadline is not None and t > deadline:
            out += _resolved(book.abandonment, ABANDONMENT, state, deadline, True)
            book.abandonment.clear()
        elif event_type == "purchase":  # a late purchase converts only what came before it
            converted = [p for p in book.abandonment if p.at <= t]
            out += _resolved(converted, ABANDONMENT, state, t, False)
            book.abandonment[:] = [p for p in book.abandonment if p.at > t]
        if not book.abandonment:
            book.cart_deadline = None

    def _resolve_next(
        self,
        book: LabelBook,
        prev_stage: str | None,
        state: JourneyState,
        t: int,
        out: list[Sample],
    ) -> None:
        moved = prev_stage is not None and state.stage != prev_stage
        keep: list[Pending] = []
        for p in book.next_stage:
            due = p.at + self.horizon_ms
            if t > due:
                out.append(_sample(p, NEXT_STAGE, state, due, p.stage if p.followed else EXIT))
            elif t < p.at:  # a late event happened before this prediction: not its outcome
                keep.append(p)
            elif moved:
                out.append(_sample(p, NEXT_STAGE, state, t, state.stage))
            else:
                keep.append(p if p.followed else p._replace(followed=True))
        book.next_stage[:] = keep


def sample_id(kind: Kind, customer_id: str, digest: str) -> str:
    """Deterministic, so a sample published twice (redelivery) is recognised as one."""
    return f"{kind[0]}:{customer_id}:{digest}"


def experiment_sample(outcome: Outcome, state: JourneyState) -> Sample:
    """An exposure (`converted` None) or an outcome as a sample; one id each per customer
    and experiment, so a republished one is recognised."""
    kind: Kind = EXPOSURE if outcome.converted is None else OUTCOME
    return Sample(
        id=f"{kind[0]}:{state.customer_id}:{outcome.experiment}",
        kind=kind,
        customer_id=state.customer_id,
        journey_map=state.journey_map,
        at=outcome.at,
        resolved_at=outcome.resolved_at,
        stage=outcome.context,
        x=[],
        label=outcome.variant if outcome.converted is None else outcome.converted,
        experiment=outcome.experiment,
        variant=outcome.variant,
    )


def _sample(p: Pending, kind: Kind, state: JourneyState, at: int, label: Label) -> Sample:
    return Sample(
        id=sample_id(kind, state.customer_id, p.id),
        kind=kind,
        customer_id=state.customer_id,
        journey_map=state.journey_map,
        at=p.at,
        resolved_at=at,
        stage=p.stage,
        x=p.x,
        label=label,
    )


def _resolved(
    pending: list[Pending], kind: Kind, state: JourneyState, at: int, label: Label
) -> list[Sample]:
    return [_sample(p, kind, state, at, label) for p in pending]


def _trim(items: list[Pending], limit: int) -> int:
    excess = len(items) - limit
    if excess > 0:
        del items[:excess]
        return excess
    return 0


def encode_book(book: LabelBook) -> bytes:
    """JSON bytes for Redis."""
    return orjson.dumps(
        {
            "n": [list(p) for p in book.next_stage],
            "a": [list(p[:4]) for p in book.abandonment],
            "d": book.cart_deadline,
        }
    )


def decode_book(raw: bytes | None) -> LabelBook:
    """The inverse of `encode_book`; no bytes is an empty book."""
    if not raw:
        return LabelBook()
    data: dict[str, Any] = orjson.loads(raw)
    return LabelBook(
        next_stage=[Pending(*row) for row in data["n"]],
        abandonment=[Pending(*row) for row in data["a"]],
        cart_deadline=data["d"],
    )
