"""The journey analytics recomputed from raw events, customer by customer: the tests' reference.

It folds the log's valid events in offset order with the pure fold and applies the documented
definitions directly (moves, first entries, exits after the horizon, carts still open at their
deadline, the watermark's share at the end), with exact distinct sets and raw durations
where the store keeps sketches. It shares only naming helpers with `models.analytics`.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.analytics import (
    ALL,
    BUCKETS,
    NEW,
    bucket_start,
    duration_bin,
    last_touches,
    segments_of,
)
from models.errors import InvalidEvent
from models.events import EXPOSURE_TYPE, EventDecoder
from models.fold import Fold, Position
from models.journeymap import EXIT, JourneyMap
from models.state import JourneyState
from service.analytics import AnalyticsStore
from service.settings import Settings

KINDS = ("e|", "n|", "m|", "c|", "f|", "d|", "w|", "a|", "v|")
"""Every counter kind the store keeps."""

Slot = tuple[str, int, str]
"""(bucket size name, bucket start, segment)"""


@dataclass
class Expected:
    counts: defaultdict[Slot, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    touches: defaultdict[Slot, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    customers: defaultdict[tuple[Slot, str], set[str]] = field(
        default_factory=lambda: defaultdict(set)
    )
    durations: defaultdict[tuple[Slot, str], list[int]] = field(
        default_factory=lambda: defaultdict(list)
    )
    before_exit: defaultdict[tuple[Slot, str], list[int]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def add(self, at: int, segments: Iterable[str], *names: str, n: int = 1) -> None:
        for slot in _slots(at, segments):
            for name in names:
                self.counts[slot][name] += n

    def starts(self, size: str) -> list[int]:
        """Every bucket start with a count, oldest first."""
        return sorted({start for g, start, _ in self.counts if g == size})

    def segments(self) -> set[str]:
        return {segment for _, _, segment in self.counts}


def recompute(
    fold: Fold,
    records: Sequence[Any],
    *,
    horizon_ms: int,
    abandon_after_ms: int,
    lateness_ms: int,
    touchpoints: int,
) -> Expected:
    """Every counter the store should hold after `records` (any batching)."""
    decoder = EventDecoder(fold.map.event_types)
    now_ms = int(time.time() * 1000)
    stages = fold.map.stages
    found = Expected()
    states: dict[str, JourneyState] = {}
    cart_due: dict[str, int] = {}
    partition_of: dict[str, int] = {}
    newest: dict[int, int] = {}

    def leave(state: JourneyState) -> None:
        segments = (ALL, *segments_of(state))
        dwell = max(state.last_event_at - state.stage_entered_at, 0)
        found.add(state.last_event_at, segments, f"m|{state.stage}|{EXIT}")
        found.add(state.last_event_at, segments, f"w|{state.stage}|{duration_bin(dwell)}")
        for slot in _slots(state.last_event_at, segments):
            found.before_exit[(slot, state.stage)].append(dwell)
            for key in last_touches(state, touchpoints):
                found.touches[slot][f"x|{key}"] += 1

    def abandon(state: JourneyState) -> None:
        cart = state.cart
        segments = (ALL, *segments_of(state))
        opened = cart.opened_at or 0
        at_checkout = any(
            tp.type == "checkout_started" and tp.at >= opened for tp in state.touchpoints
        )
        where = "checkout" if at_checkout else "earlier"
        at = cart.updated_at if cart.updated_at is not None else state.last_event_at
        found.add(at, segments, f"a|{where}")
        found.add(at, segments, f"v|{where}", n=round(cart.value * 100))
        for key in last_touches(state, touchpoints):
            for slot in _slots(at, segments):
                found.touches[slot][f"a|{key}"] += 1

    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        try:
            event = decoder.decode(record.value, now_ms)
        except InvalidEvent:
            continue
        customer, t = event.customer_id, event.timestamp_ms
        before = states.get(customer)
        after, skipped = fold.step(before, event, Position(record.partition, record.offset))
        if skipped is not None:
            continue
        states[customer] = after
        if event.type == EXPOSURE_TYPE:  # bookkeeping: the consumers record no fact for it
            continue
        if before is not None and not before.events_applied:
            before = None  # it held only exposures: the journey begins with this event
        partition_of[customer] = record.partition
        newest[record.partition] = max(newest.get(record.partition, t), t)
        segments = (ALL, *segments_of(after))
        if before is not None:
            if t > before.last_event_at + horizon_ms:
                leave(before)
                found.add(t, segments, f"m|{EXIT}|{before.stage}")
            if customer in cart_due and t > cart_due[customer]:
                abandon(before)
                del cart_due[customer]
        moves: list[tuple[str, str, int]] = []
        if before is None:
            moves.append((NEW, stages[0], 0))
            if after.stage != stages[0]:
                moves.append((stages[0], after.stage, 0))
        elif after.stage != before.stage:
            moves.append((before.stage, after.stage, t - before.stage_entered_at))
        for left, stage, spent in moves:
            found.add(t, segments, f"m|{left}|{stage}", f"e|{stage}")
            found.add(t, segments, f"c|{stage}|{event.channel}", f"f|{stage}|{after.first_channel}")
            if before is None or stage not in before.stage_first_entered:
                found.add(t, segments, f"n|{stage}")
            for slot in _slots(t, segments):
                found.customers[(slot, stage)].add(customer)
            if before is not None and stages.index(stage) > stages.index(left):
                found.add(t, segments, f"d|{left}|{duration_bin(max(spent, 0))}")
                for slot in _slots(t, segments):
                    found.durations[(slot, left)].append(max(spent, 0))
                    for key in last_touches(after, touchpoints):
                        found.touches[slot][f"p|{key}"] += 1
            elif before is not None:  # back to an earlier stage: a loop
                for slot in _slots(t, segments):
                    for key in last_touches(after, touchpoints):
                        found.touches[slot][f"k|{key}"] += 1
        if after.cart.items:
            assert after.cart.updated_at is not None
            due = after.cart.updated_at + abandon_after_ms
            if customer in cart_due:  # never moved back by a late event
                cart_due[customer] = max(due, cart_due[customer])
            else:  # a new cart, or one kept after it was abandoned: its clock starts now
                cart_due[customer] = max(due, t + abandon_after_ms)
        else:
            cart_due.pop(customer, None)

    for customer, state in states.items():
        until = newest[partition_of[customer]] - lateness_ms
        if state.last_event_at + horizon_ms < until:
            leave(state)
        if customer in cart_due and cart_due[customer] < until:
            abandon(state)
    return found


def recompute_as_configured(settings: Settings, fold: Fold, records: Sequence[Any]) -> Expected:
    """`recompute` with the horizon, lateness, touchpoints and abandon_after of `settings`."""
    analytics = settings.analytics
    return recompute(
        fold,
        records,
        horizon_ms=int(analytics.horizon_s * 1000),
        abandon_after_ms=int(settings.models.abandon_after_s * 1000),
        lateness_ms=int(analytics.allowed_lateness_s * 1000),
        touchpoints=analytics.touchpoints,
    )


def _slots(at: int, segments: Iterable[str]) -> list[Slot]:
    return [
        (name, bucket_start(at, size), segment)
        for name, size in BUCKETS.items()
        for segment in segments
    ]


def assert_estimate(got: int, exact: int) -> None:
    """HyperLogLog: standard error 0.81%; within 3 sigma, or one customer for tiny sets."""
    assert abs(got - exact) <= max(1.0, 0.025 * exact), (got, exact)


async def assert_store_matches(
    store: AnalyticsStore, journey_map: JourneyMap, expected: Expected, *, scored: bool = False
) -> None:
    """Every bucket's counters and touchpoint counts exactly, in every segment and both bucket
    sizes; distinct customers per bucket and over the range within the sketch's error.

    `scored`: the consumers attached model scores, which raw events cannot predict, so the
    risk segments are only held to adding up to `all`.
    """
    stages = journey_map.stages
    for size in ("hour", "day"):
        starts = expected.starts(size)
        if scored:
            await _assert_risk_bands_add_up(store, journey_map.name, size, starts)
        for segment in sorted(expected.segments()):
            if scored and segment.startswith("risk:"):
                continue
            reading = await store.read(
                journey_map.name, size, segment, starts, stages=stages, bucket_customers=True,
                touches=True, series=KINDS,
            )  # type: ignore[arg-type]  # fmt: skip
            for start, got in zip(starts, reading.series, strict=True):
                assert got == dict(expected.counts[(size, start, segment)]), (size, segment, start)
            touches: Counter[str] = Counter()
            for start in starts:
                touches.update(expected.touches[(size, start, segment)])
            assert reading.touches == dict(touches), (size, segment)
            for start, customers in zip(starts, reading.customers, strict=True):
                for stage in stages:
                    exact = expected.customers[((size, start, segment), stage)]
                    assert_estimate(customers[stage], len(exact))
            for stage in stages:
                union = set().union(
                    *(expected.customers[((size, s, segment), stage)] for s in starts)
                )
                assert_estimate(reading.customers_over_range[stage], len(union))


async def _assert_risk_bands_add_up(
    store: AnalyticsStore, journey_map: str, size: str, starts: list[int]
) -> None:
    """Each fact is counted under exactly one risk band: the bands sum to `all`."""
    bands: Counter[str] = Counter()
    for band in ("none", "low", "medium", "high"):
        reading = await store.read(journey_map, size, f"risk:{band}", starts)  # type: ignore[arg-type]
        bands.update(reading.totals)
    everyone = await store.read(journey_map, size, "all", starts)  # type: ignore[arg-type]
    assert dict(bands) == everyone.totals
