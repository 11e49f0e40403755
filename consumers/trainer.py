"""The trainer: learns the samples topic with progressive validation and publishes snapshots.

Each sample is scored by the model being served before it is learned (so the metrics are
honest out-of-sample figures), then learned. Every `every_samples` samples or `every_s`
seconds the trainer publishes a snapshot of its whole `TrainingState`, including the
samples-topic offsets it has learned up to. A record carries one sample or, as the state
consumer publishes them, a JSON array of a batch's samples; a record with an invalid sample
is dead-lettered after its valid ones are learned. The snapshot, not the committed offset, is the
trainer's durable state: on assignment it seeks back to the snapshot's offsets, so a
trainer killed between two snapshots learns the lost samples again, exactly once. The
samples topic has one partition by default; a second trainer in the group is a standby.

Beside each model's lifetime progressive metrics the trainer exports the same metrics over
its last `quality_window` samples, which is where a drop in quality shows first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import Gauge

from consumers.deadletter import DeadLetter, DeadLetterSink
from models.experiment_stats import probability_best
from models.labels import Sample
from models.snapshot import dump_snapshot, load_snapshot
from models.training import TrainingState
from service.metrics import TrainerMetrics
from service.snapshots import SnapshotStore

logger = logging.getLogger(__name__)


class Trainer:
    """Handler for `BatchRunner` over the samples topic; see the module docstring."""

    def __init__(
        self,
        fresh: Callable[[], TrainingState],
        snapshots: SnapshotStore,
        dead_letters: DeadLetterSink,
        metrics: TrainerMetrics,
        *,
        every_samples: int = 2000,
        every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fresh = fresh
        self._snapshots = snapshots
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._every_samples = every_samples
        self._every_s = every_s
        self._clock = clock
        self.state = fresh()
        self.version = 0
        self._unpublished = 0
        self._published_at = clock()
        self._oldest_unpublished: float | None = None
        self._shown: dict[tuple[Gauge, str], set[str]] = {}  # metrics exported per gauge, model

    async def restore(self) -> None:
        """Continue from the newest snapshot, or from scratch if there is none."""
        snapshot = await self._snapshots.fetch()
        fresh = self._fresh()
        if snapshot is None:
            self.state, self.version = fresh, 0
            logger.info("no model snapshot yet: training from scratch")
        else:
            state, _ = load_snapshot(snapshot.blob)
            if not isinstance(state, TrainingState):
                raise TypeError(f"snapshot v{snapshot.version} holds {type(state).__name__}")
            state.set_quality_window(fresh.quality_window)  # the configured one, not the saved
            self.state, self.version = state, snapshot.version
            logger.info("restored model snapshot v%d at offsets %s", self.version, state.offsets)
        self._unpublished = 0
        self._oldest_unpublished = None
        self._export()
        self._export_experiments()

    async def handle(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        letters: list[DeadLetter] = []
        for record in records:
            offset = self.state.offsets.get(record.partition)
            if offset is not None and record.offset < offset:
                continue  # learned before the snapshot this trainer restored
            letter = self._learn(record)
            if letter is not None:
                letters.append(letter)
            self.state.offsets[record.partition] = record.offset + 1
        await self._dead_letters.send(letters)
        self._export()
        if self._due():
            await self.publish()

    async def idle(self) -> None:
        if self._unpublished and self._due():
            await self.publish()

    async def idle_flush(self) -> None:
        """Publish what was learned since the last snapshot (on a clean shutdown)."""
        if self._unpublished:
            await self.publish()

    async def on_assigned(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        await self.restore()
        for tp in assigned:
            offset = self.state.offsets.get(tp.partition)
            if offset is not None:
                consumer.seek(tp, offset)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        if self._unpublished:
            await self.publish()

    async def publish(self) -> None:
        """Snapshot the training state as the next version."""
        self.state.tag(self.version + 1)
        offsets = {str(p): o for p, o in self.state.offsets.items()}
        meta = {"models": self.state.summary(), "offsets": offsets}
        blob = dump_snapshot(self.state, meta)
        self.version = await self._snapshots.publish(blob, meta, replaces=self.version)
        self._metrics.published.inc()
        self._metrics.snapshot_bytes.set(len(blob))
        self._export_experiments()
        if self._oldest_unpublished is not None:
            self._metrics.label_to_snapshot.observe(time.time() - self._oldest_unpublished)
        self._unpublished = 0
        self._oldest_unpublished = None
        self._published_at = self._clock()
        logger.info("published model snapshot v%d (%d bytes)", self.version, len(blob))

    def _learn(self, record: ConsumerRecord[bytes, bytes]) -> DeadLetter | None:
        """Learn the record's samples; a record with any invalid one is also dead-lettered."""
        try:
            data = orjson.loads(record.value)
        except orjson.JSONDecodeError as exc:
            return self._invalid(record, [_error([], exc)])
        packed = isinstance(data, list)
        errors = []
        for index, item in enumerate(data if packed else [data]):
            try:
                sample = Sample.from_dict(item)
                learned = self.state.learn(sample)
            except (ValueError, KeyError, TypeError) as exc:
                errors.append(_error([index] if packed else [], exc))
                continue
            if not learned:
                self._metrics.skipped.labels("duplicate").inc()
                continue
            self._metrics.learned.labels(sample.kind).inc()
            self._unpublished += 1
            if self._oldest_unpublished is None:
                self._oldest_unpublished = record.timestamp / 1000
        return self._invalid(record, errors) if errors else None

    def _invalid(
        self, record: ConsumerRecord[bytes, bytes], errors: list[dict[str, object]]
    ) -> DeadLetter:
        self._metrics.skipped.labels("invalid").inc(len(errors))
        return DeadLetter(record, "invalid_sample", errors)

    def _due(self) -> bool:
        if self._unpublished >= self._every_samples:
            return True
        return self._unpublished > 0 and self._clock() - self._published_at >= self._every_s

    def _export(self) -> None:
        for name, summary in self.state.summary().items():
            self._metrics.samples.labels(name).set(summary["samples"])
            self._metrics.rolling_samples.labels(name).set(summary["rolling_samples"])
            self._show(self._metrics.progressive, name, summary["metrics"])
            self._show(self._metrics.rolling, name, summary["rolling_metrics"])

    def _export_experiments(self) -> None:
        """Tallies and the probability of being best, per experiment variant, as of the
        snapshot just restored or published (the draws are too dear for every batch)."""
        metrics = self._metrics
        for experiment, arms in self.state.experiments.arms.items():
            for variant, arm in arms.items():
                counts = metrics.experiment_arms
                counts.labels(experiment, variant, "exposures").set(arm.exposures)
                counts.labels(experiment, variant, "resolved").set(arm.resolved)
                counts.labels(experiment, variant, "conversions").set(arm.conversions)
            for variant, p in probability_best(arms).items():
                metrics.experiment_best.labels(experiment, variant).set(p)

    def _show(self, gauge: Gauge, model: str, values: dict[str, float]) -> None:
        """Set `gauge{model, metric}` per value, and drop the metrics no longer defined (ROC AUC
        while the rolling window holds one label only) rather than leave stale values up."""
        shown = self._shown.get((gauge, model), set())
        for metric in shown - values.keys():
            gauge.remove(model, metric)
        for metric, value in values.items():
            gauge.labels(model, metric).set(value)
        self._shown[(gauge, model)] = set(values)


def _error(loc: list[int], exc: Exception) -> dict[str, object]:
    return {"loc": loc, "msg": f"{type(exc).__name__}: {exc}", "type": "invalid_sample"}
