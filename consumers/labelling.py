"""The state consumer's learning duties, beside the journey fold.

For each applied event it records a prediction point and resolves what the event decides
(`models.labels.Labeler`); after a customer's batch it attaches fresh scores to the journey.
Resolved samples are published before the journey write that takes them out of the book,
so a crash can repeat a sample (same id, dropped by the trainer) but never lose one. After
each batch it advances the partitions' watermarks and sweeps the customers whose deadlines
the watermark passed: event time, not the wall clock, decides when a label is due.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from consumers.experimenting import Experimenting
from consumers.triggering import Triggering
from models.experiments import due as experiments_due
from models.labels import (
    EXPERIMENT_KINDS,
    EXPOSURE,
    LabelBook,
    Labeler,
    Sample,
    decode_book,
    encode_book,
    encode_samples,
)
from models.predictions import Point, remember
from models.state import JourneyState, decode_state, encode_state
from models.triggers import Trigger
from service.bus import partitions_of, send_to_partitions
from service.errors import WriteConflict
from service.metrics import ConsumerMetrics
from service.store import JourneyStore, LabelWrite, Write

logger = logging.getLogger(__name__)

_PARTITIONER: Final = DefaultPartitioner()


class Scorer(Protocol):
    """What the consumer attaches to a journey as `predictions` (None: no models)."""

    async def refresh(self) -> None: ...

    def score_many(self, points: Sequence[Point]) -> list[dict[str, Any]]: ...


class SampleSink:
    """Publishes resolved samples to the samples topic, a batch's samples in few records.

    Each sample goes to the partition its customer's key maps to, as if sent alone; the
    samples of one call that share a partition travel as one record (`encode_samples`) of at
    most `max_record_bytes`. A record per sample cost the producer far more than the samples.
    """

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        *,
        timeout_s: float,
        max_record_bytes: int = 512 * 1024,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s
        self._max_bytes = max_record_bytes

    async def send(self, samples: Sequence[Sample]) -> None:
        if not samples:
            return
        producer, topic, timeout_s = self._producer, self._topic, self._timeout_s
        partitions = await partitions_of(producer, topic, timeout_s=timeout_s)
        by_partition: dict[int, list[Sample]] = {}
        for sample in samples:
            key = sample.customer_id.encode()
            partition = _PARTITIONER(key, partitions, partitions)
            by_partition.setdefault(partition, []).append(sample)
        records = [
            (partition, encode_samples(chunk))
            for partition, group in by_partition.items()
            for chunk in _chunks(group, self._max_bytes)
        ]
        await send_to_partitions(producer, topic, records, timeout_s=timeout_s)


class Labelling:
    """Label books, scores and sweeps for the state updater; see the module docstring."""

    def __init__(
        self,
        labeler: Labeler,
        store: JourneyStore,
        samples: SampleSink,
        metrics: ConsumerMetrics,
        *,
        scorer: Scorer | None = None,
        lateness_ms: int = 60_000,
        sweep_batch: int = 1000,
        max_conflict_retries: int = 5,
        idle_advance_after_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        triggering: Triggering | None = None,
        experimenting: Experimenting | None = None,
    ) -> None:
        self._labeler = labeler
        self._triggering = triggering
        self._experimenting = experimenting
        self._store = store
        self._samples = samples
        self._metrics = metrics
        self.scorer = scorer
        self._lateness_ms = lateness_ms
        self._sweep_batch = sweep_batch
        self._idle_after_s = idle_advance_after_s
        self._clock = clock
        self._anchors: dict[int, tuple[float, int]] = {}  # partition: (arrival, watermark)
        self._max_attempts = max_conflict_retries

    async def refresh(self) -> None:
        """Hot-reload the models if a newer snapshot was published."""
        if self.scorer is not None:
            await self.scorer.refresh()

    def book(self, raw: bytes | None) -> LabelBook:
        return decode_book(raw)

    def features(self, state: JourneyState, t: int) -> list[float]:
        return self._labeler.features(state, t)

    def observe(
        self,
        book: LabelBook,
        prev_stage: str | None,
        state: JourneyState,
        event_type: str,
        digest: str,
        t: int,
        x: list[float],
    ) -> list[Sample]:
        """Record the event as a prediction point; returns the samples it resolved."""
        resolution = self._labeler.observe(book, prev_stage, state, event_type, digest, t, x)
        if resolution.dropped:
            self._metrics.labels_dropped.inc(resolution.dropped)
        return resolution.samples

    def attach_scores(self, points: Sequence[Point]) -> None:
        """Set each journey's `predictions` to its scores at its newest applied event, and add
        them to its score history when they changed."""
        if self.scorer is None or not points:
            return
        for point, scores in zip(points, self.scorer.score_many(points), strict=True):
            point.state.predictions = scores
            remember(point.state, scores)

    def finish(self, book: LabelBook, partition: int, state: JourneyState) -> LabelWrite:
        """How the book is to be written beside its journey (whose open experiment windows
        are due in the same deadline index)."""
        return self._label_write(book, partition, state)

    async def publish(self, samples: Sequence[Sample]) -> None:
        """Make samples durable on the samples topic; raises `BusUnavailable` if it cannot."""
        if not samples:
            return
        await self._samples.send(samples)
        metrics = self._metrics
        for (kind, outcome), count in Counter(
            _outcome(s) for s in samples if s.kind not in EXPERIMENT_KINDS
        ).items():
            metrics.labels_resolved.labels(kind, outcome).inc(count)
        for (experiment, variant, outcome), count in Counter(
            _experiment_outcome(s) for s in samples if s.kind in EXPERIMENT_KINDS
        ).items():
            metrics.experiment_outcomes.labels(experiment, variant, outcome).inc(count)

    async def sweep(self, newest: dict[int, int]) -> None:
        """Advance watermarks to the batch's newest event times and resolve what is now due."""
        watermarks = await self._store.advance_watermarks(newest)
        now = self._clock()
        self._anchors.update((p, (now, w)) for p, w in watermarks.items())
        await self._resolve_due(watermarks)
        await self.sweep_idle()  # other partitions may be quiet while these are busy

    async def sweep_idle(self) -> None:
        """Move the watermark of a partition without events on by the time it has been idle.

        Event time alone would leave a quiet partition's labels (and abandoned carts) waiting
        for its next event. After `idle_advance_after_s` without one, its watermark follows the
        wall clock from its last event on; a replay that runs without pauses never gets here.
        """
        if not self._idle_after_s:
            return
        now = self._clock()
        proposed = {
            p: watermark + int((now - arrival) * 1000)
            for p, (arrival, watermark) in self._anchors.items()
            if now - arrival >= self._idle_after_s
        }
        if proposed:
            await self._resolve_due(await self._store.advance_watermarks(proposed))

    async def anchor(self, partitions: Iterable[int]) -> None:
        """Start idle timing for newly assigned partitions from their stored watermarks."""
        now = self._clock()
        for partition, watermark in (await self._store.watermarks(partitions)).items():
            self._anchors.setdefault(partition, (now, watermark))

    def forget(self, partitions: Iterable[int]) -> None:
        """Stop advancing partitions this process no longer owns."""
        for partition in partitions:
            self._anchors.pop(partition, None)

    async def _resolve_due(self, watermarks: dict[int, int]) -> None:
        for partition, watermark in watermarks.items():
            self._metrics.watermark.labels(str(partition)).set(watermark / 1000)
            until = watermark - self._lateness_ms
            while True:
                due = await self._store.due(partition, until, self._sweep_batch)
                if due:
                    await self._expire(partition, due, until)
                if len(due) < self._sweep_batch:
                    break

    async def _expire(self, partition: int, customers: list[str], until: int) -> None:
        pending = customers
        for _ in range(self._max_attempts):
            stored = await self._store.load_many(pending, with_labels=True)
            samples: list[Sample] = []
            triggers: list[Trigger] = []
            writes: list[Write] = []
            for customer, loaded in zip(pending, stored, strict=True):
                book = decode_book(loaded.labels)
                state_bytes = None
                state = decode_state(loaded.state) if loaded.state is not None else None
                if state is not None and not state.personalization:
                    book = LabelBook()  # opted out: nothing is learned or triggered from them
                elif state is not None:
                    resolved = self._labeler.expire(book, state, until)
                    samples += resolved
                    changed = False
                    if self._triggering is not None and resolved:
                        found = self._triggering.on_expired(state, resolved)
                        triggers += found
                        changed = bool(found)  # the caps it passed are recorded in the journey
                    if self._experimenting is not None:
                        closed = self._experimenting.expire(state, until)
                        samples += closed
                        changed = changed or bool(closed)
                    if changed:
                        state_bytes = encode_state(state)
                else:  # the journey expired: its predictions can never be resolved
                    self._metrics.labels_dropped.inc(len(book.next_stage) + len(book.abandonment))
                    book = LabelBook()
                label_write = self._label_write(book, partition, state)
                writes.append(Write(customer, state_bytes, loaded.rev, label_write))
            await self.publish(samples)
            if self._triggering is not None:
                await self._triggering.publish(triggers)
            conflicts = await self._store.save_many(writes)
            self._metrics.write_conflicts.inc(len(conflicts))
            pending = [writes[i].customer_id for i in conflicts]
            if not pending:
                return
        raise WriteConflict(f"{len(pending)} label books kept changing under the sweeper")

    def _label_write(
        self, book: LabelBook, partition: int, state: JourneyState | None
    ) -> LabelWrite:
        due = book.deadline(self._labeler.horizon_ms) if book else None
        if state is not None and state.experiments and state.personalization:
            window = experiments_due(state.experiments)
            if window is not None and (due is None or window < due):
                due = window
        return LabelWrite(encode_book(book) if book else None, due, partition)


def _experiment_outcome(sample: Sample) -> tuple[str, str, str]:
    if sample.kind == EXPOSURE:
        outcome = "exposed"
    else:
        outcome = "converted" if sample.label is True else "missed"
    return sample.experiment or "", sample.variant or "", outcome


def _outcome(sample: Sample) -> tuple[str, str]:
    if isinstance(sample.label, bool):
        return sample.kind, "abandoned" if sample.label else "converted"
    return sample.kind, sample.label


def _chunks(samples: list[Sample], max_bytes: int) -> Iterator[list[Sample]]:
    """Consecutive runs of `samples` whose JSON stays under `max_bytes` (at least one each)."""
    chunk: list[Sample] = []
    size = 0
    for sample in samples:
        n = len(sample.x) * 24 + 1024  # a bound on its JSON size, without encoding it twice
        if chunk and size + n > max_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append(sample)
        size += n
    if chunk:
        yield chunk
