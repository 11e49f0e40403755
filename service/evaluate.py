"""`parcours evaluate`: replay a file through the real pipeline, then judge the models' labels.

The events go through a Kafka-protocol broker and Redis (embedded ones on free ports unless
`PARCOURS_KAFKA_BOOTSTRAP` / `PARCOURS_REDIS_URL` are set; every run uses fresh topics, groups
and key prefix), the state consumer resolves the labels and the trainer learns them, exactly
as in production. Once both have caught up, every sample is read back from the samples topic
and scored canonically by `models.evaluation.evaluate`; the live trainer's own progressive
metrics (from its final snapshot) are reported beside them. The workers are passed in by the
caller (`service.cli`), since `service` does not import `consumers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from models.errors import ParcoursError
from models.evaluation import evaluate
from models.journeymap import load_journey_map
from models.labels import Sample, decode_book, decode_samples
from service.bus import client_options, ensure_parcours_topics
from service.embedded import EmbeddedKafka, EmbeddedRedis
from service.learning import fresh_training, snapshot_store
from service.replay import Format, replay_file
from service.settings import Settings
from service.store import redis_from_settings

Worker = Callable[[Settings, asyncio.Event, CollectorRegistry], Coroutine[Any, Any, None]]
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_POLL_S: Final = 0.2
_HANDLED: Final = (
    "parcours_events_applied_total", "parcours_events_deduplicated_total",
    "parcours_events_dead_lettered_total",
)  # fmt: skip
_LEARNED: Final = (
    "parcours_trainer_samples_learned_total", "parcours_trainer_samples_skipped_total"
)  # fmt: skip
_REPORTED_SETTINGS: Final = {
    "horizon_s", "abandon_after_s", "allowed_lateness_s", "min_samples", "abandonment_learner",
    "next_stage_learner", "snapshot_every_samples", "snapshot_every_s",
}  # fmt: skip
logger = logging.getLogger(__name__)


class EvaluationError(ParcoursError):
    """The pipeline did not finish (a worker crashed or stalled); the message says where."""


@dataclass
class PipelineRun:
    """What one replay through the pipeline produced."""

    sent: int = 0
    invalid: int = 0
    samples: list[Sample] = field(default_factory=list)
    censored: dict[str, int] = field(default_factory=dict)
    dropped: float = 0.0
    snapshots: float = 0.0
    label_to_snapshot_s: dict[str, float] = field(default_factory=dict)
    live: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def parse_duration(text: str) -> float:
    """Seconds in `90`, `90s`, `30m`, `1h` or `2d`.

    >>> parse_duration("30m"), parse_duration("1.5h"), parse_duration("45")
    (1800.0, 5400.0, 45.0)
    """
    text = text.strip().lower()
    unit = _UNITS.get(text[-1:]) if text else None
    seconds = float(text[:-1] if unit else text) * (unit or 1)
    if not seconds > 0:
        raise ValueError(f"duration must be positive, got {text!r}")
    return seconds


def isolated(settings: Settings, *, embedded: bool, **models: Any) -> Settings:
    """`settings` with fresh topics, groups and key prefix, metrics ports off, `models` applied."""
    tag = uuid.uuid4().hex[:10]
    kafka: dict[str, Any] = {
        "events_topic": f"eval-{tag}.events", "dead_letter_topic": f"eval-{tag}.events.dlq",
        "consumer_group": f"eval-{tag}-state",
    }  # fmt: skip
    if embedded:  # the embedded broker holds a join for about half the session timeout
        kafka |= {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}
    options = {k: v for k, v in models.items() if v is not None}
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update=kafka),
            "redis": settings.redis.model_copy(update={"key_prefix": f"eval-{tag}"}),
            "consumer": settings.consumer.model_copy(update={"metrics_port": 0}),
            "models": settings.models.model_copy(
                update={
                    "samples_topic": f"eval-{tag}.samples",
                    "trainer_group": f"eval-{tag}-trainer",
                    "trainer_metrics_port": 0,
                    "enabled": True,
                    **options,
                }
            ),
        }
    )


@contextlib.contextmanager
def infrastructure(settings: Settings) -> Iterator[Settings]:
    """`settings` pointing at a broker and Redis: the configured ones, else embedded ones."""
    with contextlib.ExitStack() as stack:
        kafka, redis = settings.kafka, settings.redis
        if not kafka.bootstrap:
            broker = stack.enter_context(EmbeddedKafka())
            kafka = kafka.model_copy(update={"bootstrap": broker.bootstrap})
        if not redis.url:
            server = stack.enter_context(EmbeddedRedis())
            redis = redis.model_copy(update={"url": server.url})
        yield settings.model_copy(update={"kafka": kafka, "redis": redis})


async def run_pipeline(
    settings: Settings, path: Path, fmt: Format, *, consumer: Worker, trainer: Worker,
    timeout_s: float = 600.0,
) -> PipelineRun:  # fmt: skip
    """Replay `path`, wait until every event is applied and every sample learned, collect.

    A trainer failure is recorded in `problems` and the run goes on: the samples, and so
    the canonical figures, come from the state consumer alone.
    """
    await ensure_parcours_topics(settings)
    stop = asyncio.Event()
    state, learning = CollectorRegistry(), CollectorRegistry()
    tasks = [
        asyncio.create_task(consumer(settings, stop, state), name="state consumer"),
        asyncio.create_task(trainer(settings, stop, learning), name="trainer"),
    ]
    started = time.monotonic()
    try:
        report = await replay_file(settings, path, fmt)
        await _settle(report.sent, state, learning, tasks, timeout_s)
    finally:
        stop.set()
        problems = await _join(tasks)
    run = PipelineRun(sent=report.sent, invalid=report.invalid, problems=problems)
    run.seconds = time.monotonic() - started
    run.dropped = _total(state, "parcours_labels_dropped_total")
    run.snapshots = _total(learning, "parcours_trainer_snapshots_published_total")
    run.label_to_snapshot_s = _histogram(learning, "parcours_trainer_label_to_snapshot")
    run.live = {"registry": _live_metrics(learning)}
    run.samples = await read_samples(settings)
    run.censored, run.live["snapshot"] = await _leftovers(settings)
    return run


async def _settle(
    sent: int, state: CollectorRegistry, learning: CollectorRegistry,
    tasks: list[asyncio.Task[None]], timeout_s: float,
) -> None:  # fmt: skip
    """Wait until the consumer has handled `sent` events and the trainer (if alive) every sample."""
    deadline = time.monotonic() + timeout_s
    consumer, trainer = tasks
    while True:
        if consumer.done():
            raise EvaluationError(f"the state consumer stopped early: {consumer.exception()!r}")
        handled = sum(map(partial(_total, state), _HANDLED))
        resolved = _total(state, "parcours_labels_resolved_total")
        learned = sum(map(partial(_total, learning), _LEARNED))
        if handled >= sent and (learned >= resolved or trainer.done()):
            return
        if time.monotonic() > deadline:
            raise EvaluationError(
                f"not settled in {timeout_s:.0f}s: consumer handled {handled:.0f}/{sent} events, "
                f"trainer learned or skipped {learned:.0f}/{resolved:.0f} samples"
            )
        await asyncio.sleep(_POLL_S)


async def _join(tasks: list[asyncio.Task[None]]) -> list[str]:
    """Stop the workers (the trainer flushes its last snapshot); their failures, as text."""
    _, pending = await asyncio.wait(tasks, timeout=30)
    for task in pending:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    problems = []
    for task, outcome in zip(tasks, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            logger.error("%s failed", task.get_name(), exc_info=outcome)
            problems.append(f"{task.get_name()} failed: {outcome!r}")
    return problems


_LIVE_GAUGES: Final = {
    "parcours_model_progressive_metric": "{metric}",
    "parcours_model_samples_seen": "samples",
    "parcours_model_rolling_metric": "rolling_{metric}",
    "parcours_model_rolling_window_samples": "rolling_samples",
}
"""The trainer's gauges the report shows, and the key each gets per model."""


def _live_metrics(registry: CollectorRegistry) -> dict[str, dict[str, float]]:
    """The live trainer's own progressive metrics, over each model's life and over its last
    PARCOURS_MODELS_QUALITY_WINDOW samples (`rolling_*`), as its gauges last showed them."""
    live: dict[str, dict[str, float]] = {}
    for metric in registry.collect():
        for sample in metric.samples:
            key = _LIVE_GAUGES.get(sample.name)
            if key is not None:
                name = key.format(metric=sample.labels.get("metric"))
                live.setdefault(sample.labels["model"], {})[name] = sample.value
    return live


async def read_samples(settings: Settings) -> list[Sample]:
    """Every record of the (no longer written) samples topic, from the beginning, no group.

    Reads past the reported end offsets until a poll comes back empty: the embedded Tansu
    broker reports the last batch's base offset + 1 as the end, short of the last records.
    """
    topic = settings.models.samples_topic
    consumer = AIOKafkaConsumer(**client_options(settings.kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        samples: list[Sample] = []
        while True:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                samples += [s for record in records for s in decode_samples(record.value)]
            if not batch and not [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                return samples
    finally:
        await consumer.stop()


async def _leftovers(settings: Settings) -> tuple[dict[str, int], dict[str, Any]]:
    """Predictions still pending (censored) in the label books, and the live trainer's meta."""
    redis = redis_from_settings(settings.redis, max_connections=2)
    censored = {"next_stage": 0, "abandonment": 0}
    prefix = settings.redis.key_prefix
    try:
        async for key in redis.scan_iter(match=f"{prefix}:{{j*}}:labels:*", count=1000):
            raw = await redis.get(key)
            book = decode_book(raw if isinstance(raw, bytes) else None)
            censored["next_stage"] += len(book.next_stage)
            censored["abandonment"] += len(book.abandonment)
        snapshot = await snapshot_store(redis, settings.redis).fetch(blob=False)
    finally:
        await redis.aclose()
    meta = snapshot.meta if snapshot is not None else {}
    return censored, {"version": snapshot and snapshot.version, **meta}


def _total(registry: CollectorRegistry, sample_name: str) -> float:
    """The sum of a metric's samples over all label values."""
    return sum(
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == sample_name
    )


def _histogram(registry: CollectorRegistry, name: str) -> dict[str, float]:
    count = _total(registry, f"{name}_seconds_count")
    total = _total(registry, f"{name}_seconds_sum")
    return {"count": count, "mean": total / count if count else float("nan")}


def evaluate_file(
    settings: Settings, path: Path, fmt: Format, *, consumer: Worker, trainer: Worker,
    seed: int = 0, timeout_s: float = 600.0,
) -> dict[str, Any]:  # fmt: skip
    """Run the pipeline over `path` (in `settings`'s isolated namespace) and build the report."""
    run = asyncio.run(
        run_pipeline(settings, path, fmt, consumer=consumer, trainer=trainer, timeout_s=timeout_s)
    )
    return build_report(settings, run, {"file": str(path), "format": fmt, "seed": seed})


def build_report(settings: Settings, run: PipelineRun, header: dict[str, Any]) -> dict[str, Any]:
    """The canonical evaluation of `run`'s samples under `settings`, with how they were made."""
    journey_map = load_journey_map(settings.journey.map)
    fresh = partial(fresh_training, settings.models, journey_map)
    report = evaluate(run.samples, fresh, seed=header.get("seed", 0))
    pipeline = {k: v for k, v in vars(run).items() if k not in ("samples", "live")}
    used = settings.models.model_dump(include=_REPORTED_SETTINGS)
    return {
        **header, "settings": used | {"partitions": settings.kafka.partitions},
        "pipeline": {**pipeline, "samples_published": len(run.samples)}, **report,
        "live_trainer": run.live,
    }  # fmt: skip


_COLUMNS: Final = {
    "abandonment": ("n", "positive_rate", "roc_auc", "log_loss", "brier"),
    "next_stage": ("n", "accuracy", "macro_f1", "log_loss"),
}


def render(report: dict[str, Any]) -> str:
    """The report as plain-text tables: one per task, one row per model and scope."""
    pipeline = report["pipeline"]
    lines = [
        f"{report['file']}: {pipeline['sent']} events replayed ({pipeline['invalid']} invalid), "
        f"{pipeline['samples_published']} samples published in {pipeline['seconds']:.1f}s; "
        f"censored (still pending at the end): {pipeline['censored']}",
        f"labels_digest {report['labels_digest']}",
    ]
    for task, columns in _COLUMNS.items():
        header = ("model", "scope", *columns)
        rows = [header, *(_cells(row, columns) for row in report[task]["rows"])]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines += ["", f"{task} ({report['samples'][task]} samples)"]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
        lines += [f"  note: {note}" for note in report[task]["notes"]]
    lines += [f"problem: {problem}" for problem in pipeline["problems"]]
    lines += ["", "live trainer (River's own progressive estimates, from its gauges):"]
    for task, values in report["live_trainer"]["registry"].items():
        lines.append(f"  {task}: " + ", ".join(f"{k} {_number(v)}" for k, v in values.items()))
    return "\n".join(lines)


def _cells(row: dict[str, Any], columns: tuple[str, ...]) -> tuple[str, ...]:
    return (row["model"], row["scope"], *(_number(row.get(c)) for c in columns))


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.4f}"
