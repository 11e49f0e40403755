"""What the analytics answer, computed from the counters summed over a time range (pure).

The counters are the fields `models.analytics` defines, summed over the range's buckets of
one segment. Conversion is counted on departures: of the moves out of a stage in the range
(to another stage, or an exit), the share that went to a later stage. Friction ranks each
touchpoint by its lift: its share among the last touchpoints before an exit (or an abandoned
cart) over its share among the last touchpoints before moving on, so a busy page is not
blamed for being busy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from models.analytics import CHECKOUT, EARLIER, bin_seconds, moves_on, split_touch
from models.journeymap import EXIT, JourneyMap

Counters = Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Durations:
    """Time spent in a stage before moving on: how many moves, and quantiles (histogram)."""

    moves: int
    median_s: float | None
    p90_s: float | None


@dataclass(frozen=True, slots=True)
class StageFunnel:
    stage: str
    entered: int
    first_entries: int
    customers: int
    departures: int
    moved_on: int
    to_next: int
    moved_back: int
    exits: int
    durations: Durations
    before_exit: Durations

    @property
    def conversion(self) -> float | None:
        """The share of departures that moved on to a later stage."""
        return self.moved_on / self.departures if self.departures else None

    @property
    def to_next_rate(self) -> float | None:
        return self.to_next / self.departures if self.departures else None


@dataclass(frozen=True, slots=True)
class TouchLift:
    type: str
    channel: str
    target: str
    count: int
    progress: int
    lift: float


@dataclass(frozen=True, slots=True)
class Friction:
    exits: int
    progress: int
    abandoned: Mapping[str, int]
    abandoned_value_cents: Mapping[str, int]
    exit_touches: list[TouchLift]
    cart_touches: list[TouchLift]


@dataclass(frozen=True, slots=True)
class StageChannels:
    stage: str
    entered: int
    last_touch: dict[str, int]
    first_touch: dict[str, int]


def add_counters(total: dict[str, int], more: Counters) -> None:
    for name, n in more.items():
        total[name] = total.get(name, 0) + n


def moves(totals: Counters) -> dict[tuple[str, str], int]:
    """Every `(from, to)` stage move counted (`new` and `exit` included)."""
    found: dict[tuple[str, str], int] = {}
    for name, n in totals.items():
        if name.startswith("m|") and n:
            _, left, entered = name.split("|", 2)
            found[(left, entered)] = found.get((left, entered), 0) + n
    return found


def quantile(histogram: Mapping[int, int], q: float) -> float | None:
    """The nearest-rank quantile of binned durations, as its bin's value (`bin_seconds`).

    >>> quantile({0: 1, 5: 3}, 0.5), quantile({}, 0.5)
    (2.1810154653305154, None)
    """
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index in sorted(histogram):
        seen += histogram[index]
        if seen >= rank:
            return bin_seconds(index)
    raise AssertionError("unreachable: the ranks add up to the total")


def funnel(
    journey_map: JourneyMap, totals: Counters, customers: Mapping[str, int]
) -> list[StageFunnel]:
    """Per stage of the map, in order: entries, departures by kind, and time to move on."""
    stages = journey_map.stages
    flows = moves(totals)
    result = []
    for i, stage in enumerate(stages):
        out = {to: n for (left, to), n in flows.items() if left == stage}
        on = sum(n for to, n in out.items() if moves_on(journey_map, stage, to))
        exits = out.get(EXIT, 0)
        result.append(
            StageFunnel(
                stage=stage,
                entered=totals.get(f"e|{stage}", 0),
                first_entries=totals.get(f"n|{stage}", 0),
                customers=customers.get(stage, 0),
                departures=sum(out.values()),
                moved_on=on,
                to_next=out.get(stages[i + 1], 0) if i + 1 < len(stages) else 0,
                moved_back=sum(out.values()) - on - exits,
                exits=exits,
                durations=_durations(totals, f"d|{stage}|"),
                before_exit=_durations(totals, f"w|{stage}|"),
            )
        )
    return result


def _durations(totals: Counters, prefix: str) -> Durations:
    """The histogram of the fields `<prefix><bin>`, as a count and quantiles."""
    histogram = {
        int(name[len(prefix) :]): n for name, n in totals.items() if name.startswith(prefix)
    }
    return Durations(sum(histogram.values()), quantile(histogram, 0.5), quantile(histogram, 0.9))


def lifts(
    touches: Counters, outcome: str, outcomes: int, progress: int, *, limit: int, min_count: int
) -> list[TouchLift]:
    """Touchpoints seen before `outcome` (`x` exit, `a` abandoned cart), best lift first.

    lift = (count / outcomes) / ((progress_count + 1) / (progress + 1)): the +1 keeps a
    touchpoint never seen before moving on finite. Ties rank by count, then key.
    """
    if outcomes <= 0:
        return []
    ranked = []
    for name, count in touches.items():
        if not name.startswith(f"{outcome}|") or count < min_count:
            continue
        key = name[2:]
        kind, channel, target = split_touch(key)
        before_progress = touches.get(f"p|{key}", 0)
        lift = (count / outcomes) / ((before_progress + 1) / (progress + 1))
        ranked.append(TouchLift(kind, channel, target, count, before_progress, lift))
    ranked.sort(key=lambda t: (-t.lift, -t.count, t.type, t.channel, t.target))
    return ranked[:limit]


def friction(totals: Counters, touches: Counters, *, limit: int, min_count: int) -> Friction:
    """Exits and abandoned carts, and the touchpoints that precede them more than progress."""
    exits = sum(n for (_, to), n in moves(totals).items() if to == EXIT)
    progress = sum(n for name, n in totals.items() if name.startswith("d|"))  # one per move on
    where = (CHECKOUT, EARLIER)
    abandoned = {w: totals.get(f"a|{w}", 0) for w in where}
    return Friction(
        exits=exits,
        progress=progress,
        abandoned=abandoned,
        abandoned_value_cents={w: totals.get(f"v|{w}", 0) for w in where},
        exit_touches=lifts(touches, "x", exits, progress, limit=limit, min_count=min_count),
        cart_touches=lifts(
            touches, "a", sum(abandoned.values()), progress, limit=limit, min_count=min_count
        ),
    )


def channels(stages: Sequence[str], totals: Counters) -> list[StageChannels]:
    """Per stage: entries by the channel of the entering event and of the first touch."""
    result = []
    for stage in stages:
        last: dict[str, int] = {}
        first: dict[str, int] = {}
        for name, n in totals.items():
            if name.startswith((f"c|{stage}|", f"f|{stage}|")) and n:
                into = last if name[0] == "c" else first
                into[name.rsplit("|", 1)[1]] = n
        result.append(StageChannels(stage, totals.get(f"e|{stage}", 0), last, first))
    return result
