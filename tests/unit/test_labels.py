"""Training labels (`models.labels`): abandonment, next stage, the book, batching independence."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field, replace

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.events import Event
from models.fold import Fold, event_digest
from models.journeymap import EXIT
from models.labels import (
    ABANDONMENT,
    CART_ACTIVITY,
    NEXT_STAGE,
    Kind,
    Label,
    LabelBook,
    Labeler,
    Pending,
    Sample,
    decode_book,
    decode_samples,
    encode_book,
    encode_samples,
    sample_id,
)
from models.state import JourneyState

MakeEvent = Callable[..., Event]
Ms = Callable[[float], int]

HORIZON_MIN, ABANDON_MIN = 10, 30
MINUTE = 60_000
FAR_FUTURE = 2**62
A: Kind = "abandonment"
N: Kind = "next_stage"


def features(state: JourneyState, t: int) -> list[float]:
    """Deterministic features that change with every event (and would show a later state)."""
    return [float(state.events_applied), float(t), float(state.cart.units), state.cart.value]


def make_labeler(max_pending: int = 1000) -> Labeler:
    return Labeler(
        features,
        abandon_after_ms=ABANDON_MIN * MINUTE,
        horizon_ms=HORIZON_MIN * MINUTE,
        max_pending=max_pending,
    )


@dataclass
class Journey:
    """One customer driven like the state consumer drives it: fold, then `observe`."""

    fold: Fold
    labeler: Labeler = field(default_factory=make_labeler)
    state: JourneyState | None = None
    book: LabelBook = field(default_factory=LabelBook)
    samples: list[Sample] = field(default_factory=list)
    dropped: int = 0

    def add(self, *events: Event) -> list[Sample]:
        """Apply and observe `events`; returns the samples they resolved."""
        new: list[Sample] = []
        for event in events:
            prev = self.state.stage if self.state is not None else None
            self.state = self.fold.apply(self.state, event)
            digest, t = event_digest(event.event_id), event.timestamp_ms
            resolution = self.labeler.observe(self.book, prev, self.state, event.type, digest, t)
            new += resolution.samples
            self.dropped += resolution.dropped
        self.samples += new
        return new

    def expire(self, until_ms: int) -> list[Sample]:
        assert self.state is not None
        new = self.labeler.expire(self.book, self.state, until_ms)
        self.samples += new
        return new


def outcomes(samples: Iterable[Sample], kind: Kind) -> dict[str, tuple[Label, int]]:
    """(label, resolved_at) of one kind's samples by id, asserting ids are unique."""
    chosen = [s for s in samples if s.kind == kind]
    by_id = {s.id: (s.label, s.resolved_at) for s in chosen}
    assert len(by_id) == len(chosen), "duplicate sample ids"
    return by_id


def sid(kind: Kind, event: Event) -> str:
    return sample_id(kind, event.customer_id, event_digest(event.event_id))


def digests(pending: list[Pending]) -> list[str]:
    return [p.id for p in pending]


def cart(
    make_event: MakeEvent, minutes: float, kind: str = "add_to_cart", pid: str = "p1"
) -> Event:
    return make_event(minutes=minutes, type=kind, properties={"product_id": pid})


# --- abandonment --------------------------------------------------------------------------


@pytest.mark.parametrize("minute", [20, ABANDON_MIN], ids=["within", "at-deadline"])
def test_abandonment_purchase_by_deadline_labels_episode_converted(
    fold: Fold, make_event: MakeEvent, ms: Ms, minute: int
) -> None:
    journey = Journey(fold)
    add, view = cart(make_event, 0), make_event(minutes=5)
    journey.add(add, view)
    resolved = journey.add(make_event(minutes=minute, type="purchase"))

    converted = (False, ms(minute))
    assert outcomes(resolved, A) == {sid(A, add): converted, sid(A, view): converted}
    assert not journey.book.abandonment  # the emptied cart records no new prediction


@pytest.mark.parametrize("event_type", ["page_view", "purchase"])
def test_abandonment_next_event_after_deadline_labels_abandoned_at_deadline(
    fold: Fold, make_event: MakeEvent, ms: Ms, event_type: str
) -> None:
    journey = Journey(fold)
    add = cart(make_event, 0)
    journey.add(add)
    resolved = journey.add(make_event(minutes=ABANDON_MIN + 1, type=event_type))

    assert outcomes(resolved, A) == {sid(A, add): (True, ms(ABANDON_MIN))}


def test_abandonment_expire_labels_abandoned_only_after_deadline(
    fold: Fold, make_event: MakeEvent, ms: Ms
) -> None:
    journey = Journey(fold)
    add = cart(make_event, 0)
    journey.add(add)
    assert outcomes(journey.expire(ms(ABANDON_MIN)), A) == {}
    assert digests(journey.book.abandonment) == [event_digest(add.event_id)]

    resolved = journey.expire(ms(ABANDON_MIN) + 1)

    assert outcomes(resolved, A) == {sid(A, add): (True, ms(ABANDON_MIN))}
    assert (bool(journey.book), journey.book.cart_deadline) == (False, None)


def test_abandonment_second_add_to_cart_extends_deadline(
    fold: Fold, make_event: MakeEvent, ms: Ms
) -> None:
    journey = Journey(fold)
    first, second = cart(make_event, 0), cart(make_event, 20)
    journey.add(first, second)
    assert journey.book.cart_deadline == ms(20 + ABANDON_MIN)
    assert outcomes(journey.expire(ms(ABANDON_MIN) + 1), A) == {}

    view = make_event(minutes=40)  # after the first deadline, before the extended one
    assert outcomes(journey.add(view), A) == {}
    resolved = journey.add(make_event(minutes=20 + ABANDON_MIN, type="purchase"))

    converted = (False, ms(20 + ABANDON_MIN))
    assert outcomes(resolved, A) == {sid(A, e): converted for e in (first, second, view)}


def test_abandonment_predictions_only_while_cart_holds_items(
    fold: Fold, make_event: MakeEvent
) -> None:
    journey = Journey(fold)
    journey.add(make_event(minutes=0), make_event(minutes=1, type="checkout_started"))
    assert not journey.book.abandonment

    add = cart(make_event, 2)
    journey.add(add, cart(make_event, 3, "remove_from_cart"), make_event(minutes=4))

    assert digests(journey.book.abandonment) == [event_digest(add.event_id)]
    assert set(outcomes(journey.expire(FAR_FUTURE), A)) == {sid(A, add)}


@pytest.mark.parametrize("swept", [False, True])
def test_abandonment_return_to_cart_after_abandoned_starts_new_episode(
    fold: Fold, make_event: MakeEvent, ms: Ms, swept: bool
) -> None:
    journey = Journey(fold)
    add, back = cart(make_event, 0), make_event(minutes=40)
    journey.add(add)
    if swept:  # labelled by the watermark rather than by the customer's return
        journey.expire(ms(ABANDON_MIN) + 1)
    journey.add(back)
    assert outcomes(journey.samples, A) == {sid(A, add): (True, ms(ABANDON_MIN))}
    assert journey.book.cart_deadline == ms(40 + ABANDON_MIN)

    resolved = journey.add(make_event(minutes=60, type="purchase"))

    assert outcomes(resolved, A) == {sid(A, back): (False, ms(60))}


# --- next stage ---------------------------------------------------------------------------


@pytest.mark.parametrize("minute", [2, HORIZON_MIN], ids=["within", "at-horizon"])
def test_next_stage_transition_resolves_all_pending_with_new_stage(
    fold: Fold, make_event: MakeEvent, ms: Ms, minute: int
) -> None:
    journey = Journey(fold)
    first, second = make_event(minutes=0), make_event(minutes=1)
    journey.add(first, second)
    view = cart(make_event, minute, "product_view")

    resolved = journey.add(view)

    moved = ("consideration", ms(minute))
    assert outcomes(resolved, N) == {sid(N, first): moved, sid(N, second): moved}
    assert {s.stage for s in resolved} == {"awareness"}
    assert digests(journey.book.next_stage) == [event_digest(view.event_id)]


def test_next_stage_active_again_within_horizon_labels_stay_at_horizon(
    fold: Fold, make_event: MakeEvent, ms: Ms
) -> None:
    journey = Journey(fold)
    first, again = make_event(minutes=0), make_event(minutes=5)
    journey.add(first, again)
    assert [p.followed for p in journey.book.next_stage] == [True, False]

    resolved = journey.expire(ms(HORIZON_MIN) + 1)

    assert outcomes(resolved, N) == {sid(N, first): ("awareness", ms(HORIZON_MIN))}
    assert digests(journey.book.next_stage) == [event_digest(again.event_id)]


def test_next_stage_never_seen_again_labels_exit_strictly_after_horizon(
    fold: Fold, make_event: MakeEvent, ms: Ms
) -> None:
    journey = Journey(fold)
    first = make_event(minutes=0)
    journey.add(first)
    assert journey.expire(ms(HORIZON_MIN)) == []

    resolved = journey.expire(ms(HORIZON_MIN) + 1)

    assert outcomes(resolved, N) == {sid(N, first): (EXIT, ms(HORIZON_MIN))}
    assert len(resolved) == 1
    assert not journey.book


def test_next_stage_event_after_horizon_resolves_older_before_recording(
    fold: Fold, make_event: MakeEvent, ms: Ms
) -> None:
    journey = Journey(fold)
    first, second = make_event(minutes=0), make_event(minutes=5)
    journey.add(first, second)
    late = cart(make_event, 20, "product_view")

    resolved = journey.add(late)

    assert outcomes(resolved, N) == {
        sid(N, first): ("awareness", ms(HORIZON_MIN)),  # followed by `second`: stayed
        sid(N, second): (EXIT, ms(5 + HORIZON_MIN)),
    }
    assert [(p.id, p.stage) for p in journey.book.next_stage] == [
        (event_digest(late.event_id), "consideration")
    ]


@pytest.mark.parametrize(
    "arrivals",
    [
        pytest.param([(40, "add_to_cart"), (0, "add_to_cart")], id="cart-deadline-moves-back"),
        pytest.param([(40, "add_to_cart"), (35, "purchase")], id="earlier-purchase-converts"),
        pytest.param([(5, "page_view"), (3, "product_view")], id="earlier-move-is-next-stage"),
    ],
)
def test_observe_late_event_never_resolves_before_prediction(
    fold: Fold, make_event: MakeEvent, arrivals: list[tuple[int, str]]
) -> None:
    """Out-of-order arrival (the consumer accepts late events): an outcome follows its cause."""
    journey = Journey(fold)
    journey.add(
        *(cart(make_event, minute, kind, f"p{i}") for i, (minute, kind) in enumerate(arrivals))
    )
    journey.expire(FAR_FUTURE)

    early = [s for s in journey.samples if s.resolved_at < s.at]
    assert [(s.kind, s.at, s.resolved_at, s.label) for s in early] == []


# --- the book and the wire forms ----------------------------------------------------------


def pending(digest: str, at: int, *, followed: bool = False) -> Pending:
    return Pending(digest, at, "decision", [float(at), 0.5], followed)


def test_book_deadline_is_minimum_of_pending_deadlines() -> None:
    book = LabelBook([pending("a", 100), pending("b", 50)], [pending("c", 40)], cart_deadline=55)
    assert book.deadline(10) == 55
    book.cart_deadline = 70
    assert book.deadline(10) == 60
    book.abandonment.clear()  # a cart deadline without abandonment predictions is no deadline
    assert book.deadline(1000) == 1050
    book.next_stage.clear()
    assert book.deadline(10) is None


def test_book_bool_false_only_without_pending_predictions() -> None:
    assert not LabelBook()
    assert not LabelBook(cart_deadline=5)
    assert LabelBook(next_stage=[pending("a", 1)])
    assert LabelBook(abandonment=[pending("a", 1)], cart_deadline=5)


def test_observe_over_max_pending_trims_oldest_and_reports_dropped(
    fold: Fold, make_event: MakeEvent
) -> None:
    journey = Journey(fold, make_labeler(max_pending=2))
    adds = [cart(make_event, minute) for minute in (0, 1, 2)]
    journey.add(*adds)

    assert journey.dropped == 2  # one next-stage and one abandonment prediction
    kept = [event_digest(e.event_id) for e in adds[1:]]
    assert digests(journey.book.next_stage) == digests(journey.book.abandonment) == kept


def test_encode_decode_book_round_trips(fold: Fold, make_event: MakeEvent, ms: Ms) -> None:
    journey = Journey(fold)
    journey.add(cart(make_event, 0), make_event(minutes=1), make_event(minutes=2))
    book = journey.book
    assert [p.followed for p in book.next_stage] == [True, True, False]
    assert (len(book.abandonment), book.cart_deadline) == (3, ms(ABANDON_MIN))
    assert decode_book(encode_book(book)) == book

    no_cart = LabelBook([pending("a", 1, followed=True), pending("b", 2)], [], None)
    assert decode_book(encode_book(no_cart)) == no_cart
    assert decode_book(None) == decode_book(b"") == LabelBook()


SAMPLE = Sample("n:c1:d", "next_stage", "c1", "retail", 1, 2, "awareness", [1.0, 2.5], EXIT)


def test_sample_json_round_trips() -> None:
    converted = replace(SAMPLE, id="a:c1:d", kind="abandonment", label=False)
    for sample in (SAMPLE, replace(SAMPLE, label="decision"), converted):
        assert Sample.from_json(sample.to_json()) == sample


def test_decode_samples_packed_or_single_record_gives_its_samples() -> None:
    converted = replace(SAMPLE, id="a:c1:d", kind="abandonment", label=False)

    assert decode_samples(encode_samples([SAMPLE, converted])) == [SAMPLE, converted]
    assert decode_samples(SAMPLE.to_json()) == [SAMPLE]
    assert decode_samples(encode_samples([])) == []


def test_decode_samples_any_invalid_item_raises() -> None:
    raw = b"[" + SAMPLE.to_json() + b',{"kind": "abandonment"}]'
    with pytest.raises(KeyError):
        decode_samples(raw)


@pytest.mark.parametrize(
    ("kind", "label"),
    [(ABANDONMENT, "exit"), (ABANDONMENT, 1), (NEXT_STAGE, True), (NEXT_STAGE, None), ("x", "y")],
)
def test_sample_from_json_wrong_label_or_kind_raises(kind: str, label: object) -> None:
    raw = orjson.dumps({**orjson.loads(SAMPLE.to_json()), "kind": kind, "label": label})
    with pytest.raises(ValueError, match=r"label|kind"):
        Sample.from_json(raw)


# --- properties: batching independence, completeness, no features from the future ---------

TYPES = ("product_view", "add_to_cart", "remove_from_cart", "checkout_started", "purchase")
GAPS = (0, 0, 1, 4, HORIZON_MIN, HORIZON_MIN + 1, ABANDON_MIN, ABANDON_MIN + 1, 90)
Step = tuple[int, str, int, str]  # customer, type, minutes since the previous event, product
PROPERTY_SETTINGS = settings(
    max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@st.composite
def streams(draw: st.DrawFn) -> list[Step]:
    customers = draw(st.integers(1, 3))
    step = st.tuples(
        st.integers(0, customers - 1),
        st.sampled_from((*TYPES, "page_view")),
        st.sampled_from(GAPS),
        st.sampled_from(("p1", "p2", "")),
    )
    return draw(st.lists(step, min_size=1, max_size=25))


def build(make_event: MakeEvent, steps: list[Step]) -> list[Event]:
    """One partition's events in global event-time order."""
    events, minute = [], 0
    for c, kind, gap, pid in steps:
        minute += gap
        props = {"product_id": pid or "p1"} if pid or kind in TYPES[:3] else {}
        events.append(make_event(minutes=minute, customer_id=f"c{c}", type=kind, properties=props))
    return events


def replay(
    fold: Fold, labeler: Labeler, events: list[Event], boundaries: list[bool], lateness: int
) -> tuple[list[Sample], int]:
    """The consumer's loop: observe each event, sweep at batch boundaries, then a final sweep."""
    journeys: dict[str, Journey] = {}
    watermark = 0
    for event, boundary in zip(events, boundaries, strict=True):
        journey = journeys.setdefault(event.customer_id, Journey(fold, labeler))
        journey.add(event)
        watermark = max(watermark, event.timestamp_ms)
        if boundary:
            until = watermark - lateness
            for j in journeys.values():
                due = j.book.deadline(labeler.horizon_ms)
                # the store sweeps a customer exactly when expire would resolve something
                assert bool(j.expire(until)) == (due is not None and due < until)
    for j in journeys.values():
        j.expire(FAR_FUTURE)
        assert not j.book
    samples = [s for j in journeys.values() for s in j.samples]
    return samples, sum(j.dropped for j in journeys.values())


def multiset(samples: list[Sample]) -> Counter[Hashable]:
    return Counter((s.id, s.label, s.at, s.resolved_at, s.stage, tuple(s.x)) for s in samples)


@PROPERTY_SETTINGS
@given(
    steps=streams(),
    cuts=st.lists(st.booleans(), min_size=25, max_size=25),
    lateness=st.sampled_from((0, 1, 5 * MINUTE)),
    max_pending=st.sampled_from((1000, 2)),
)
def test_property_samples_independent_of_batch_boundaries(
    fold: Fold,
    make_event: MakeEvent,
    steps: list[Step],
    cuts: list[bool],
    lateness: int,
    max_pending: int,
) -> None:
    events = build(make_event, steps)
    labeler = make_labeler(max_pending)
    n = len(events)

    every, dropped = replay(fold, labeler, events, [True] * n, lateness)
    for boundaries in ([False] * n, cuts[:n]):
        other, other_dropped = replay(fold, labeler, events, boundaries, lateness)
        assert multiset(other) == multiset(every)
        assert other_dropped == dropped


After = dict[str, tuple[Event, JourneyState, str | None]]


@PROPERTY_SETTINGS
@given(steps=streams())
def test_property_each_prediction_labelled_once_from_its_own_features(
    fold: Fold, make_event: MakeEvent, steps: list[Step]
) -> None:
    events = build(make_event, steps)
    samples, dropped = replay(fold, make_labeler(), events, [False] * len(events), 0)
    assert dropped == 0

    # re-fold each customer's prefix: the state right after each event and the stage before it
    after: After = {}
    states: dict[str, JourneyState] = {}
    for event in events:
        prev = states.get(event.customer_id)
        states[event.customer_id] = state = fold.apply(prev, event)
        after[event_digest(event.event_id)] = (event, state, prev.stage if prev else None)
    in_cart = [e for e, state, _ in after.values() if state.cart.items]

    assert set(outcomes(samples, N)) == {sid(N, e) for e in events}
    assert set(outcomes(samples, A)) == {sid(A, e) for e in in_cart}
    assert len(samples) == len(events) + len(in_cart)
    for sample in samples:
        event, state, _ = after[sample.id.rsplit(":", 1)[1]]
        assert sample.at == event.timestamp_ms <= sample.resolved_at
        assert (sample.customer_id, sample.stage) == (event.customer_id, state.stage)
        assert sample.x == features(state, sample.at)
        expected = expected_outcome(sample, events, after)
        assert (sample.label, sample.resolved_at) == expected or expected is None


def expected_outcome(sample: Sample, events: list[Event], after: After) -> tuple[Label, int] | None:
    """An independent reading of the docstring's rules, from the customer's later events.

    None where a checkable consequence holds but the outcome depends on the cart episode.
    """
    start = next(i for i, e in enumerate(events) if sample.id.endswith(event_digest(e.event_id)))
    later = [e for e in events[start + 1 :] if e.customer_id == sample.customer_id]
    if sample.kind == ABANDONMENT:
        purchases = [e.timestamp_ms for e in later if e.type == "purchase"]
        if sample.label is False:  # converted by the next purchase
            return (False, purchases[0])
        deadline = sample.resolved_at  # abandoned: no purchase by a deadline set by activity
        assert not any(t <= deadline for t in purchases)
        assert not any(
            e.type in CART_ACTIVITY and deadline - ABANDON_MIN * MINUTE < e.timestamp_ms <= deadline
            for e in later
        )
        return None
    due = sample.at + HORIZON_MIN * MINUTE
    within = [e for e in later if e.timestamp_ms <= due]
    for e in within:
        _, state, prev_stage = after[event_digest(e.event_id)]
        if state.stage != prev_stage:
            return (state.stage, e.timestamp_ms)
    return (sample.stage if within else EXIT, due)


def test_labeler_next_stage_rate_keeps_the_same_share_of_events_on_every_replay() -> None:
    def kept(rate: float) -> set[str]:
        labeler = Labeler(
            lambda state, t: [0.0], abandon_after_ms=1000, horizon_ms=1000, next_stage_rate=rate
        )
        ids = set()
        state = JourneyState("c", "retail", "awareness", 0, 0, 0)
        for n in range(2000):
            book = LabelBook()
            labeler.observe(book, "awareness", state, "page_view", event_digest(f"e{n}"), n)
            ids |= {p.id for p in book.next_stage}
        return ids

    quarter = kept(0.25)

    assert kept(0.25) == quarter
    assert 400 < len(quarter) < 600
    assert quarter < kept(0.5)
    assert kept(0.0) == set()
    assert len(kept(1.0)) == 2000
