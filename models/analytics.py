"""What each applied event contributes to the journey analytics: the pure definitions.

A `Fact` is one applied event's share, all on event time:

- its stage moves (`m|<from>|<to>`; `new` before a customer's first event, which enters the
  map's first stage and then, if it moves them, the stage it leads to) and the entries they
  make (`e|<stage>`, `n|<stage>` the first time ever), with the channel of the event that
  entered (`c|<stage>|<channel>`) and of the customer's first touch (`f|<stage>|<channel>`);
- for a move to a later stage ("moving on"), the time spent in the stage left, as a
  histogram bin (`d|<stage>|<bin>`), and the customer's last touchpoints (friction's
  "progress" side); not for the move a first event makes at once out of the first stage,
  which is an arrival, not time spent or progress;
- for a move back to an earlier stage (a "loop"), the customer's last touchpoints;
- a return after an exit (`m|exit|<stage>`, see below);
- the deadlines at which the customer exits (`exit_due`: the newest event time plus the
  horizon) and the open cart is abandoned (`cart_due`: the last cart change plus
  `abandon_after`), and, when a later event or the watermark may pass them, the `Leaving`
  record those outcomes are counted from.

An exit is "not seen again within the horizon": it is counted once, from the customer's stage,
the time they had spent in it (`w|<stage>|<bin>`, the dwell before exit) and their last
touchpoints at their last event, when an event of theirs arrives after the deadline
or the partition's watermark passes it. An abandoned cart is one that still holds items when
its deadline passes; it was abandoned "at checkout" if a `checkout_started` is among the kept
touchpoints since the cart opened, else "earlier". Each fact is counted under the segments
`all`, `first_channel:<channel>`, `visitor:new|returning` (the customer's first session or
a later one) and `risk:none|low|medium|high` (the abandonment risk last scored for the open
cart), per hour and per day.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple

from models.events import Channel, Event
from models.journeymap import EXIT, JourneyMap
from models.state import JourneyState, Touchpoint, new_leaf

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000
BUCKETS: Final[Mapping[str, int]] = {"hour": HOUR_MS, "day": DAY_MS}
Bucket = Literal["hour", "day"]

NEW: Final = "new"
"""The pseudo-stage a customer leaves with their first event."""
UNKNOWN: Final = "unknown"
"""The first-touch channel of journeys kept before Parcours recorded it."""
ALL: Final = "all"
RISK_BANDS: Final = ((0.3, "low"), (0.7, "medium"), (math.inf, "high"))
"""Upper bounds (exclusive) of the abandonment-risk bands; no scored open cart is `none`."""
VISITORS: Final = ("new", "returning")
CHECKOUT: Final = "checkout"
EARLIER: Final = "earlier"

BINS_PER_DOUBLING: Final = 4
MAX_BIN: Final = 1 + 30 * BINS_PER_DOUBLING
"""Durations bin by quarter-doublings of seconds; bin 0 is under a second, the last ~34 years."""


def moves_on(journey_map: JourneyMap, left: str, entered: str) -> bool:
    """A move to a later stage of the map; a stage the map no longer has counts as before all.

    `new` and `exit` are not stages: leaving or entering them never moves a customer on.
    """
    if left in (NEW, EXIT) or entered == EXIT:
        return False
    stages = journey_map.stages
    return (stages.index(entered) if entered in stages else -1) > (
        stages.index(left) if left in stages else -1
    )


def bucket_start(at_ms: int, size_ms: int) -> int:
    """The start of the (UTC-aligned) bucket holding `at_ms`.

    >>> bucket_start(HOUR_MS * 5 + 7, HOUR_MS) == HOUR_MS * 5
    True
    """
    return at_ms - at_ms % size_ms


def segment_names() -> frozenset[str]:
    """Every segment a fact can be counted under."""
    channels = [c.value for c in Channel] + [UNKNOWN]
    return frozenset(
        [ALL]
        + [f"first_channel:{c}" for c in channels]
        + [f"visitor:{v}" for v in VISITORS]
        + [f"risk:{band}" for band in ("none", *(name for _, name in RISK_BANDS))]
    )


def risk_band(predictions: Mapping[str, Any] | None) -> str:
    """The band of the abandonment risk in a journey's attached scores.

    >>> risk_band({"abandonment": {"risk": 0.75}}), risk_band(None)
    ('high', 'none')
    """
    scored = (predictions or {}).get("abandonment")
    if not scored:
        return "none"
    risk = float(scored["risk"])
    return next(name for bound, name in RISK_BANDS if risk < bound)


def segments_of(state: JourneyState) -> tuple[str, str, str]:
    """The segments (besides `all`) a fact about `state` is counted under."""
    visitor = VISITORS[0] if state.session.count <= 1 else VISITORS[1]
    return (
        f"first_channel:{state.first_channel or UNKNOWN}",
        f"visitor:{visitor}",
        f"risk:{risk_band(state.predictions)}",
    )


def touch_key(touchpoint: Touchpoint) -> str:
    """`type|channel|target`: the target is the product, else the page without its query.

    >>> touch_key(Touchpoint("page_view", "web", 0, None, "https://s.example/c?q=1#top"))
    'page_view|web|https://s.example/c'
    """
    target = touchpoint.product_id
    if target is None:
        page = touchpoint.page or ""
        target = page.split("#", 1)[0].split("?", 1)[0]
    return f"{touchpoint.type}|{touchpoint.channel}|{target}"


def split_touch(key: str) -> tuple[str, str, str]:
    """A `touch_key` back into its type, channel and target (targets may hold `|`).

    >>> split_touch("page_view|web|https://s.example/a|b")
    ('page_view', 'web', 'https://s.example/a|b')
    """
    kind, channel, target = key.split("|", 2)
    return kind, channel, target


def last_touches(state: JourneyState, count: int) -> tuple[str, ...]:
    """The distinct touch keys among the customer's last `count` touchpoints, newest first."""
    keys: dict[str, None] = {}
    for touchpoint in reversed(state.touchpoints[-count:]):
        keys.setdefault(touch_key(touchpoint), None)
    return tuple(keys)


def duration_bin(ms: int) -> int:
    """The histogram bin of a duration: 0 below a second, then quarter-doublings of seconds.

    >>> duration_bin(999), duration_bin(1000), duration_bin(2000), duration_bin(60_000)
    (0, 1, 5, 24)
    """
    if ms < 1000:
        return 0
    return min(1 + math.floor(BINS_PER_DOUBLING * math.log2(ms / 1000)), MAX_BIN)


def bin_seconds(index: int) -> float:
    """The value a bin stands for: 0 for bin 0, else its geometric middle.

    Any duration in bin `index` is within a factor 2 ** (1 / 8) (9.1%) of it.
    """
    if index <= 0:
        return 0.0
    return float(2 ** ((index - 0.5) / BINS_PER_DOUBLING))


class Before(NamedTuple):
    """What a fact needs from the journey as it was just before the event (the fold then
    changes the journey in place). A tuple: one is built per event."""

    stage: str
    entered_at: int
    last_event_at: int
    stages_reached: int

    @classmethod
    def of(cls, state: JourneyState | None) -> Before | None:
        if state is None:
            return None
        return new_leaf(
            cls,
            (state.stage, state.stage_entered_at, state.last_event_at,
             len(state.stage_first_entered)),
        )  # fmt: skip


class CartLeaving(NamedTuple):
    """An open cart as it stood at the customer's last event."""

    at: int
    where: str
    value_cents: int


class Leaving(NamedTuple):
    """The customer at their last event: what an exit or an abandoned cart is counted from.
    A tuple: one is built per customer and chunk."""

    journey_map: str
    at: int
    stage: str
    segments: tuple[str, ...]
    touches: tuple[str, ...]
    cart: CartLeaving | None
    dwell_bin: int = 0
    """The time spent in `stage` until the last event, as a `duration_bin`."""


@dataclass(slots=True)
class Fact:
    """One applied event's contribution; `(partition, offset)` fences it to once."""

    partition: int
    offset: int
    at: int
    segments: tuple[str, ...]
    counts: list[str]
    entered: list[str]
    progress: tuple[str, ...]
    exit_due: int
    cart_due: int | None
    leaving: Leaving | None = field(default=None)
    looped: tuple[str, ...] = ()
    """The last touchpoints before a move back to an earlier stage."""

    def may_resolve_at(self, at: int) -> bool:
        """Whether an event at `at` could find this fact's deadlines passed."""
        due = self.exit_due if self.cart_due is None else min(self.exit_due, self.cart_due)
        return at > due


class Recorder:
    """Turns applied events into facts under one journey map; pure, the caller stores them."""

    def __init__(
        self, journey_map: JourneyMap, *, horizon_ms: int, abandon_after_ms: int, touchpoints: int
    ) -> None:
        if horizon_ms <= 0 or abandon_after_ms <= 0 or touchpoints < 1:
            raise ValueError("need a positive horizon and abandon_after, and touchpoints >= 1")
        self.map = journey_map
        self.horizon_ms = horizon_ms
        self.abandon_after_ms = abandon_after_ms
        self.touchpoints = touchpoints

    def fact(
        self, before: Before | None, state: JourneyState, event: Event, partition: int, offset: int
    ) -> Fact:
        """The contribution of `event`, applied to a journey that was `before` and is `state`."""
        t = event.timestamp_ms
        counts: list[str] = []
        if before is not None and t > before.last_event_at + self.horizon_ms:
            counts.append(f"m|{EXIT}|{before.stage}")
        first_entry = before is None or len(state.stage_first_entered) > before.stages_reached
        first_channel = state.first_channel or UNKNOWN
        entered: list[str] = []
        progress: tuple[str, ...] = ()
        looped: tuple[str, ...] = ()
        for left, stage, spent in self._moves(before, state, t):
            entered.append(stage)
            counts += [f"m|{left}|{stage}", f"e|{stage}", f"c|{stage}|{event.channel}"]
            counts.append(f"f|{stage}|{first_channel}")
            if first_entry:
                counts.append(f"n|{stage}")
            if before is not None and moves_on(self.map, left, stage):
                counts.append(f"d|{left}|{duration_bin(max(spent, 0))}")
                progress = last_touches(state, self.touchpoints)
            elif before is not None:
                looped = last_touches(state, self.touchpoints)
        cart_due = None
        if state.cart.items:
            changed = state.cart.updated_at
            cart_due = (changed if changed is not None else t) + self.abandon_after_ms
        return Fact(
            partition, offset, t, segments_of(state), counts, entered, progress,
            state.last_event_at + self.horizon_ms, cart_due, looped=looped,
        )  # fmt: skip

    def _moves(
        self, before: Before | None, state: JourneyState, t: int
    ) -> list[tuple[str, str, int]]:
        """The event's stage moves: (stage left, stage entered, ms spent in the one left)."""
        if before is None:
            initial = self.map.initial_stage
            moves = [(NEW, initial, 0)]
            if state.stage != initial:
                moves.append((initial, state.stage, 0))
            return moves
        if state.stage == before.stage:
            return []
        return [(before.stage, state.stage, t - before.entered_at)]

    def leaving(self, state: JourneyState) -> Leaving:
        """The record an exit or abandonment of `state` (at its last event) is counted from."""
        cart = None
        if state.cart.items:
            opened = state.cart.opened_at if state.cart.opened_at is not None else 0
            checkout = any(
                tp.type == "checkout_started" and tp.at >= opened for tp in state.touchpoints
            )
            changed = state.cart.updated_at
            cart = new_leaf(
                CartLeaving,
                (changed if changed is not None else state.last_event_at,
                 CHECKOUT if checkout else EARLIER, round(state.cart.value * 100)),
            )  # fmt: skip
        return new_leaf(
            Leaving,
            (self.map.name, state.last_event_at, state.stage, segments_of(state),
             last_touches(state, self.touchpoints), cart,
             duration_bin(max(state.last_event_at - state.stage_entered_at, 0))),
        )  # fmt: skip
