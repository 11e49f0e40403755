"""Folds batches of event records into journey state in Redis with exactly-once effect.

Per batch: decode (bad records become dead letters), load every touched journey in one round
trip, fold each customer's events in log order a chunk at a time, write each chunk's changed
journeys in one atomic compare-and-set call (while the next chunk is folded), and retry only
the journeys another writer changed meanwhile. The fold skips events already applied, so a
redelivered batch, a client retry or a zombie writer after a rebalance cannot apply an event
twice. The caller commits offsets after `handle` returns, or, with `begin`, once what it
returned completes (the runner takes on the next batch meanwhile).

With `Labelling`, each customer's label book is read and written in the same round trips
and atomic write as the journey, and the batch ends with a watermark sweep. With
`AnalyticsRecording`, each applied event leaves an analytics fact, counted before the write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias, TypeGuard

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from consumers.analytics_recording import AnalyticsRecording
from consumers.catalog_learning import CatalogLearning
from consumers.deadletter import DeadLetter, DeadLetterSink
from consumers.experimenting import Experimenting
from consumers.labelling import Labelling
from consumers.triggering import Triggering
from models.analytics import Fact
from models.catalog import CatalogUpdate
from models.errors import InvalidEvent
from models.events import EXPOSURE_TYPE, FEEDBACK_TYPES, Event, EventDecoder
from models.fold import Fold, Position, last_digest
from models.gauges import journey_gauge
from models.labels import LabelBook, Sample
from models.predictions import Point
from models.recommend import action_type_of
from models.state import CartItem, JourneyState, decode_state, encode_state
from models.triggers import Trigger
from service.errors import WriteConflict
from service.logs import at_record
from service.metrics import ConsumerMetrics
from service.store import JourneyStore, LabelWrite, Stored, Write

logger = logging.getLogger(__name__)

Record: TypeAlias = ConsumerRecord  # of bytes key and value

NEW_CUSTOMER = "new"
"""The stage a customer's first event moves them from, in the stage-transition metric."""


@dataclass(slots=True)
class _Folded:
    """One customer's batch folded onto the stored journey."""

    state: JourneyState | None = None
    rev: int = 0
    applied: list[tuple[Event, Record]] = field(default_factory=list)
    redelivered: int = 0
    duplicates: int = 0
    failed: list[DeadLetter] = field(default_factory=list)
    book: LabelBook | None = None
    samples: list[Sample] = field(default_factory=list)
    newest: Point | None = None  # the journey at its last applied event, to be scored
    latest: dict[int, int] = field(default_factory=dict)  # newest event time per partition
    lessons: list[CatalogUpdate] = field(default_factory=list)
    triggers: list[Trigger] = field(default_factory=list)
    moves: list[tuple[str, str]] = field(default_factory=list)  # (stage left, stage entered)
    stored_stage: str | None = None  # the stage of the journey as loaded
    facts: list[Fact] = field(default_factory=list)
    erased: int = 0  # events of an erased customer, dropped while the erasure is held


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A folded chunk, scored, with everything its write makes durable."""

    results: list[_Folded]
    triggers: list[Trigger]
    writes: list[Write]


_YIELD_EVERY = 16
"""Customers folded between chances for the chained writes to move (an event loop turn)."""


class StateUpdater:
    """Applies event records to journey state; see the module docstring for the protocol."""

    def __init__(
        self,
        store: JourneyStore,
        decoder: EventDecoder,
        fold: Fold,
        dead_letters: DeadLetterSink,
        metrics: ConsumerMetrics,
        *,
        max_conflict_retries: int = 5,
        chunk_records: int = 500,
        clock: Callable[[], float] = time.time,
        labelling: Labelling | None = None,
        catalog: CatalogLearning | None = None,
        triggering: Triggering | None = None,
        analytics: AnalyticsRecording | None = None,
        experimenting: Experimenting | None = None,
    ) -> None:
        self._store = store
        self._decoder = decoder
        self._fold = fold
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._max_attempts = max_conflict_retries
        self._chunk_records = chunk_records
        self._clock = clock
        self._labelling = labelling
        self._catalog = catalog
        self._triggering = triggering
        self._analytics = analytics
        self._experimenting = experimenting if labelling is not None else None
        self._carried: dict[str, Stored] = {}  # the journeys of the batch before, as written
        self._last_side: asyncio.Future[None] | None = None
        self._done: asyncio.Future[set[str]] | None = None

    async def handle(self, records: Sequence[Record]) -> None:
        """Make the batch's effect durable in Redis (and the dead-letter topic), or raise.

        The next batch starts from Redis: see `begin` for folding a batch while the one
        before is still being written.
        """
        try:
            await (await self.begin(records))
        finally:
            self.reset()

    async def begin(self, records: Sequence[Record]) -> Awaitable[set[str]]:
        """Fold the batch and start its writes; returns what completes once its effect is
        durable (or raises why not). Call it for the next batch before that completes, and
        the next batch is decoded, loaded and folded while this one is written.

        The batch is folded in chunks of consecutive records, and each chunk is written while
        the next is folded: Redis and this process work at the same time. A chunk continues
        from the journeys the chunk before it wrote (their revision one higher), so a batch
        has the effect of its chunks taken as batches one after the other; so does the next
        batch, from the journeys this one wrote. The writes are chained: a chunk is written
        only after the one before it, and not at all if that one failed, so the per-partition
        fences and the revisions stay in log order. The next batch's first journey write also
        waits for this batch to be done (conflicts retried, deadlines swept), and leaves out
        the journeys this batch found changed under it, which it reloads instead.

        After a failure (here or in what was returned), call `reset` before the batches are
        delivered again.
        """
        self._metrics.consumed.inc(len(records))
        chunks, letters = self._decode(records)
        labelling = self._labelling
        with_labels = labelling is not None
        if labelling is not None:
            await labelling.refresh()
        if self._experimenting is not None:
            await self._experimenting.refresh()
        customers = list(dict.fromkeys(c for chunk in chunks for c in chunk))
        carried = self._carried
        wanted = [c for c in customers if c not in carried]
        loaded = await self._store.load_many(wanted, with_labels=with_labels)
        stored = {c: carried[c] for c in customers if c in carried}
        stored.update(zip(wanted, loaded, strict=True))
        previous = self._done
        folded: list[dict[str, _Folded]] = []
        sides: list[asyncio.Future[None]] = []
        writing: list[asyncio.Future[set[str]]] = []
        if previous is not None:  # the journeys the batch before found changed are reloaded
            writing.append(asyncio.ensure_future(_changed_among(previous, set(customers))))
        last_side = self._last_side
        try:
            for chunk in chunks:
                attempt: dict[str, _Folded] = {}
                for i, (customer, items) in enumerate(chunk.items()):
                    attempt[customer] = self._fold_customer(stored[customer], items)
                    if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                        await asyncio.sleep(0)  # let the writes before move through Redis
                prepared = self._prepare(attempt)
                for write in prepared.writes:
                    stored[write.customer_id] = _as_written(stored[write.customer_id], write)
                last_side = asyncio.ensure_future(self._side_writes(prepared, last_side))
                sides.append(last_side)
                after = writing[-1] if writing else None
                writing.append(asyncio.ensure_future(self._write(prepared, after, last_side)))
                folded.append(attempt)
                await asyncio.sleep(0)
        except BaseException:
            await asyncio.gather(*sides, *writing, return_exceptions=True)
            raise
        self._carried = {c: stored[c] for c in customers}
        self._last_side = last_side
        done = asyncio.ensure_future(
            self._finish(chunks, letters, folded, sides, writing, with_labels)
        )
        self._done = done
        return done

    def reset(self) -> None:
        """Forget the batch in flight: the next batch loads every journey from Redis and its
        writes wait for nothing (after a failure, a rebalance, or a batch handled whole)."""
        self._carried = {}
        self._last_side = None
        self._done = None

    async def _finish(
        self,
        chunks: list[dict[str, list[tuple[Event, Record]]]],
        letters: list[DeadLetter],
        folded: list[dict[str, _Folded]],
        sides: list[asyncio.Future[None]],
        writing: list[asyncio.Future[set[str]]],
        with_labels: bool,
    ) -> set[str]:
        """Once the chunks are written, retry the journeys that changed under this writer,
        then dead letters, deadlines and metrics; returns every customer whose journey changed
        under this writer in this batch (the next batch must not trust its own view of them)."""
        await asyncio.gather(*sides, return_exceptions=True)
        outcomes = await asyncio.gather(*writing, return_exceptions=True)
        pending: list[str] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            pending = sorted(outcome)  # each chunk's holds the ones before it
        changed = set(pending)
        if pending:
            events_of: dict[str, list[tuple[Event, Record]]] = {}
            for chunk in chunks:
                for customer, items in chunk.items():
                    events_of.setdefault(customer, []).extend(items)
        for _ in range(self._max_attempts - 1):
            if not pending:
                break
            for attempt in folded:
                for customer in pending:
                    attempt.pop(customer, None)
            again = await self._store.load_many(pending, with_labels=with_labels)
            attempt = {
                c: self._fold_customer(loaded_again, events_of[c])
                for c, loaded_again in zip(pending, again, strict=True)
            }
            prepared = self._prepare(attempt)
            conflicted = await self._write(prepared, None, self._side_writes(prepared, None))
            folded.append(attempt)
            pending = [c for c in pending if c in conflicted]
        if pending:
            raise WriteConflict(f"{len(pending)} journeys kept changing under this writer")
        results = [result for attempt in folded for result in attempt.values()]
        for result in results:
            letters.extend(result.failed)
        await self._dead_letters.send(letters)
        if self._labelling is not None:
            await self._labelling.sweep(_newest(results))
        self._record(results, letters)
        return changed

    def _prepare(self, attempt: dict[str, _Folded]) -> _Prepared:
        """Score the folded journeys and collect what they decided: all that a write needs."""
        if self._labelling is not None:
            self._labelling.attach_scores([r.newest for r in attempt.values() if r.newest])
        triggers = self._collect_triggers(attempt.values())
        self._announce(attempt.values())
        writes = [
            self._journey_write(customer, result)
            for customer, result in attempt.items()
            if result.applied and result.state is not None
        ]
        return _Prepared(list(attempt.values()), triggers, writes)

    async def _side_writes(self, prepared: _Prepared, after: Awaitable[None] | None) -> None:
        """Once the chunk before made its side writes durable (raising what they raised),
        make this chunk's: the per-partition fences in Redis then move in log order."""
        if after is not None:
            await after
        await self._before_writing(prepared.results, prepared.triggers)

    async def _write(
        self,
        prepared: _Prepared,
        after: Awaitable[set[str]] | None,
        side: Awaitable[None],
    ) -> set[str]:
        """Once the journey write `after` is done (raising what it raised) and this chunk's
        side writes `side` are, write its journeys; returns the customers whose journey
        changed under this writer, in this chunk or one before (whose later chunks are then
        not written).

        The side writes of the next chunk may run meanwhile: they are repeatable and
        fenced, so a journey write failing after them only means they are repeated, as
        no-ops, when the batch is redelivered."""
        conflicted = set(await after) if after is not None else set()
        writes = [w for w in prepared.writes if w.customer_id not in conflicted]
        await side
        lost = {writes[i].customer_id for i in await self._store.save_many(writes)}
        self._metrics.write_conflicts.inc(len(lost))
        return conflicted | lost

    def _collect_triggers(self, results: Iterable[_Folded]) -> list[Trigger]:
        """The batch's triggers; scoring may have put carts at risk (recorded in `alerts`)."""
        triggering = self._triggering
        if triggering is None:
            return []
        found: list[Trigger] = []
        for result in results:
            if result.newest is not None and result.state is not None:
                result.triggers += triggering.on_scored(result.state, result.newest.at)
            found += result.triggers
        return found

    def _announce(self, results: Iterable[_Folded]) -> None:
        """Exposures recorded in this batch (events or triggers) leave as samples."""
        if self._experimenting is None:
            return
        for result in results:
            if result.applied and result.state is not None and result.state.personalization:
                result.samples += self._experimenting.announce(result.state)

    async def _before_writing(self, results: list[_Folded], triggers: list[Trigger]) -> None:
        """Everything the journey write will account for is made durable first, concurrently:
        triggers and samples on Kafka, catalog lessons and analytics facts in Redis (each
        repeatable)."""
        steps: list[Awaitable[None]] = []
        if self._triggering is not None:
            steps.append(self._triggering.publish(triggers))
        if self._labelling is not None:
            steps.append(self._labelling.publish([s for r in results for s in r.samples]))
        if self._catalog is not None:
            lessons = [u for r in results for u in r.lessons]
            steps.append(self._catalog.learn(lessons, [a for r in results for a in r.applied]))
        if self._analytics is not None:
            facts = [(r.state.customer_id, r.facts) for r in results if r.facts and r.state]
            steps.append(self._analytics.record(facts))
        await asyncio.gather(*steps)

    async def on_assigned(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        """Journeys and label books live in Redis; only idle timing starts here."""
        if self._labelling is not None:
            await self._labelling.anchor(tp.partition for tp in assigned)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        if self._labelling is not None:
            self._labelling.forget(tp.partition for tp in revoked)
        if self._analytics is not None:
            self._analytics.forget(tp.partition for tp in revoked)

    async def idle(self) -> None:
        """Between polls that found nothing: let quiet partitions' labels come due."""
        if self._labelling is not None:
            await self._labelling.sweep_idle()
        if self._analytics is not None:
            await self._analytics.idle()

    def _journey_write(self, customer: str, result: _Folded) -> Write:
        assert result.state is not None
        labels: LabelWrite | None = None
        if self._labelling is not None and result.book is not None:
            partition = result.applied[-1][1].partition
            labels = self._labelling.finish(result.book, partition, result.state)
        gauge = None
        if _begun(result.state):  # counted live from its first behaviour, as in the analytics
            gauge = journey_gauge(result.state, result.stored_stage)
        return Write(customer, encode_state(result.state), result.rev, labels, gauge)

    def _decode(
        self, records: Sequence[Record]
    ) -> tuple[list[dict[str, list[tuple[Event, Record]]]], list[DeadLetter]]:
        """Valid events by customer in log order, in chunks of `chunk_records` consecutive
        records; and the dead letters."""
        now_ms = int(self._clock() * 1000)
        chunks: list[dict[str, list[tuple[Event, Record]]]] = []
        letters: list[DeadLetter] = []
        for start, end in _chunk_bounds(len(records), self._chunk_records):
            by_customer: dict[str, list[tuple[Event, Record]]] = {}
            for record in records[start:end]:
                try:
                    event = self._decoder.decode(record.value, now_ms)
                except InvalidEvent as exc:
                    letters.append(DeadLetter(record, exc.reason, exc.errors))
                    continue
                by_customer.setdefault(event.customer_id, []).append((event, record))
            if by_customer:
                chunks.append(by_customer)
        return chunks, letters

    def _fold_customer(self, stored: Stored, items: list[tuple[Event, Record]]) -> _Folded:
        """Apply in place on a freshly decoded state; the decoded state is ours alone."""
        if stored.erased:  # nothing of theirs is kept, learned from or triggered on
            return _Folded(rev=stored.rev, erased=len(items))
        result = _Folded(_decoded(stored), rev=stored.rev)
        result.stored_stage = result.state.stage if _begun(result.state) else None
        labelling, catalog, triggering = self._labelling, self._catalog, self._triggering
        analytics, experimenting = self._analytics, self._experimenting
        if labelling is not None:
            result.book = labelling.book(stored.labels)
        for event, record in items:
            position = Position(record.partition, record.offset)
            # a journey holding only exposures has not begun: its first behaviour starts it
            prev_stage = result.state.stage if _begun(result.state) else None
            behaviour = event.type != EXPOSURE_TYPE  # an exposure is bookkeeping only
            try:
                cart: dict[str, CartItem] = {}
                if result.state is not None and (catalog or triggering):
                    cart = result.state.cart.items.copy()  # the fold changes it in place
                lesson = None
                if catalog is not None:
                    lesson = catalog.lesson(cart, event, record.partition, record.offset)
                before = None
                if analytics is not None and behaviour:
                    begun = result.state if _begun(result.state) else None
                    before = analytics.before(result.facts, begun, event)
                result.state, skipped = self._fold.step_owned(result.state, event, position)
                t = event.timestamp_ms
                if labelling is not None and skipped is None and behaviour:
                    x = labelling.features(result.state, t)
            except Exception as exc:  # a fold bug must not stall the partition
                logger.exception(
                    "cannot apply event at %s[%d]@%d", record.topic, record.partition,
                    record.offset, extra=at_record(
                        record.topic, record.partition, record.offset,
                        customer_id=event.customer_id,
                    ),
                )  # fmt: skip
                result.failed.append(DeadLetter(record, "apply_failed", [_error(exc)]))
                result.state = self._rebuild(stored, result.applied)
                result.newest = None  # its state object was replaced: no score this batch
                continue
            if skipped is None:
                result.applied.append((event, record))
                if behaviour and result.state.stage != prev_stage:
                    result.moves.append((prev_stage or NEW_CUSTOMER, result.state.stage))
                if lesson is not None:
                    result.lessons.append(lesson)
                if analytics is not None and behaviour:
                    analytics.observe(
                        result.facts, before, result.state, event, record.partition, record.offset
                    )
                personal = result.state.personalization  # consent: no labels, triggers, scores
                if experimenting is not None and personal:
                    started = prev_stage is None
                    result.samples += experimenting.on_event(result.state, started, event.type, t)
                if not behaviour:
                    continue
                digest = last_digest(result.state) if labelling or triggering else ""
                resolved: list[Sample] = []
                if labelling is not None and result.book is not None and personal:
                    resolved = labelling.observe(
                        result.book, prev_stage, result.state, event.type, digest, t, x
                    )
                    result.samples += resolved
                if triggering is not None and personal:
                    result.triggers += triggering.on_event(
                        result.state, prev_stage, cart, event, digest, resolved
                    )
                if labelling is not None and result.book is not None and personal:
                    result.newest = Point(result.state, x, t)
                    if t > result.latest.get(record.partition, -1):
                        result.latest[record.partition] = t
            elif skipped == "redelivered":
                result.redelivered += 1
            else:
                result.duplicates += 1
        if analytics is not None:
            analytics.finish(result.facts, result.state)
        if result.state is not None and not result.state.personalization:
            _forget_personal(result)
        return result

    def _rebuild(self, stored: Stored, applied: list[tuple[Event, Record]]) -> JourneyState | None:
        """The state before a failed event: the stored snapshot plus the events applied since."""
        return self._fold.fold(
            _decoded(stored), ((e, Position(r.partition, r.offset)) for e, r in applied)
        )

    def _record(self, folded: Iterable[_Folded], letters: list[DeadLetter]) -> None:
        metrics = self._metrics
        now = self._clock()
        applied_types: dict[str, int] = {}
        redelivered = duplicates = erased = 0
        oldest: dict[int, int] = {}  # per partition: the oldest Kafka timestamp applied
        oldest_event: dict[int, int] = {}  # and the oldest event time
        moves: Counter[tuple[str, str]] = Counter()
        for result in folded:
            redelivered += result.redelivered
            duplicates += result.duplicates
            erased += result.erased
            moves.update(result.moves)
            for event, record in result.applied:
                applied_types[event.type] = applied_types.get(event.type, 0) + 1
                if event.type in FEEDBACK_TYPES:
                    _count_feedback(metrics, event)
                if record.timestamp < oldest.get(record.partition, record.timestamp + 1):
                    oldest[record.partition] = record.timestamp
                at = event.timestamp_ms
                if at < oldest_event.get(record.partition, at + 1):
                    oldest_event[record.partition] = at
        scored = self._labelling is not None and self._labelling.scorer is not None
        for timestamp in oldest.values():  # one sample per partition per batch: its worst case
            metrics.state_lag.observe(max(0.0, now - timestamp / 1000))
            if scored:  # the refreshed scores are written with the state, in the same call
                metrics.score_lag.observe(max(0.0, now - timestamp / 1000))
        for at in oldest_event.values():
            metrics.event_time_lag.observe(max(0.0, now - at / 1000))
        for event_type, count in applied_types.items():
            metrics.applied.labels(event_type).inc(count)
        for (left, entered), count in moves.items():
            metrics.stage_transitions.labels(left, entered).inc(count)
        if redelivered:
            metrics.deduplicated.labels("redelivered").inc(redelivered)
        if duplicates:
            metrics.deduplicated.labels("duplicate_event_id").inc(duplicates)
        if erased:
            metrics.suppressed.labels("erased").inc(erased)
        for reason, count in Counter(letter.reason for letter in letters).items():
            metrics.dead_lettered.labels(reason).inc(count)


def _count_feedback(metrics: ConsumerMetrics, event: Event) -> None:
    rec_id = event.properties.recommendation_id or ""
    kind = event.type.removeprefix("recommendation_")
    metrics.recommendation_feedback.labels(action_type_of(rec_id), kind).inc()


def _chunk_bounds(total: int, size: int) -> list[tuple[int, int]]:
    """Chunks of `size` records, the first two a quarter and a half of it: Redis has the
    first write to do sooner, instead of idling while the first whole chunk is folded."""
    bounds: list[tuple[int, int]] = []
    start = 0
    for n in (max(1, size // 4), max(1, size // 2)):
        if start < total:
            bounds.append((start, min(start + n, total)))
            start += n
    bounds += [(i, min(i + size, total)) for i in range(start, total, size)]
    return bounds


async def _changed_among(done: Awaitable[set[str]], customers: set[str]) -> set[str]:
    """Once the batch before is done: those of `customers` whose journey changed under it."""
    return (await done) & customers


def _newest(folded: Iterable[_Folded]) -> dict[int, int]:
    """The newest applied event time per partition: where the watermarks move to."""
    newest: dict[int, int] = {}
    for result in folded:
        for partition, t in result.latest.items():
            if t > newest.get(partition, -1):
                newest[partition] = t
    return newest


def _forget_personal(result: _Folded) -> None:
    """An opted-out customer keeps no scores and no predictions waiting to be learned from."""
    assert result.state is not None
    result.state.predictions = None
    result.state.score_history = []
    if result.book is not None:
        result.book = LabelBook()
    result.newest = None


def _begun(state: JourneyState | None) -> TypeGuard[JourneyState]:
    """Whether the journey holds behaviour, not only exposures (bookkeeping events)."""
    return state is not None and state.events_applied > 0


def _as_written(stored: Stored, write: Write) -> Stored:
    """What loading the journey would give after `write`: where the next chunk starts."""
    labels = write.labels.book if write.labels is not None else stored.labels
    return Stored(write.state, stored.rev + 1, labels)


def _decoded(stored: Stored) -> JourneyState | None:
    return decode_state(stored.state) if stored.state is not None else None


def _error(exc: Exception) -> dict[str, object]:
    return {"loc": [], "msg": f"{type(exc).__name__}: {exc}", "type": "apply_failed"}
