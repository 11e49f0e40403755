"""Model quality on real clickstream: learners against baselines, on labels from the real pipeline.

Replays the REES46 slice once through the broker, Redis, state consumer and trainer (embedded
unless PARCOURS_KAFKA_BOOTSTRAP / PARCOURS_REDIS_URL are set), then, since every learner sees
the very same labels, evaluates each learner variant offline on the collected samples:
abandonment `logreg` / `hoeffding_tree`, next stage `ovr_logreg` / `softmax` /
`hoeffding_tree`. Also measures the trainer's throughput (`TrainingState.learn` over the
canonical samples, median of `--runs`) and the label-to-snapshot time from the live trainer's
histogram. Prints a markdown table for BENCHMARKS.md.

The slice covers 2 h 50 min, so the default 24 h next-stage horizon could never expire and
every "exit" label would be censored: the default here is `--horizon 30m`.

    python -m bench.model_quality --horizon 30m --abandon-after 1h
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from consumers.state_worker import run_state_consumer
from consumers.trainer_worker import run_trainer
from models.evaluation import canonical, evaluate
from models.journeymap import load_journey_map
from models.labels import Sample
from service.evaluate import build_report, infrastructure, isolated, parse_duration, run_pipeline
from service.learning import fresh_training
from service.settings import Settings

DATA = Path("/work/shared/data/rees46_multicat_2019oct_first3h/events.csv.gz")
VARIANTS = {
    "abandonment": ("logreg", "hoeffding_tree"),
    "next_stage": ("ovr_logreg", "softmax", "hoeffding_tree"),
}
COLUMNS = ("n", "positive_rate", "roc_auc", "log_loss", "brier", "accuracy", "macro_f1")


def throughput(settings: Settings, samples: list[Sample], runs: int) -> float:
    """Samples per second through `TrainingState.learn`, median of `runs` fresh states."""
    journey_map = load_journey_map(settings.journey.map)
    rates = []
    for _ in range(runs):
        state = fresh_training(settings.models, journey_map)
        started = time.perf_counter()
        for sample in samples:
            state.learn(sample)
        rates.append(len(samples) / (time.perf_counter() - started))
    return statistics.median(rates)


def variant_rows(settings: Settings, report: dict[str, Any], samples: list[Sample],
                 args: argparse.Namespace) -> list[dict[str, Any]]:  # fmt: skip
    """One row per learner (online, all samples and second half), then every baseline."""
    journey_map = load_journey_map(settings.journey.map)
    rows: list[dict[str, Any]] = []
    for task, learners in VARIANTS.items():
        for learner in learners:
            models = settings.models.model_copy(update={f"{task}_learner": learner})
            fresh = partial(fresh_training, models, journey_map)
            varied = evaluate(samples, fresh, seed=args.seed)
            rate = throughput(settings.model_copy(update={"models": models}), samples, args.runs)
            rows += [
                {"task": task, **row, "model": f"online {learner}", "samples_per_s": rate}
                for row in varied[task]["rows"] if row["model"] == "online"
            ]  # fmt: skip
        rows += [{"task": task, **r} for r in report[task]["rows"] if r["model"] != "online"]
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    header = ["task", "model", "scope", *COLUMNS, "learn samples/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["task"], row["model"], row["scope"], *(_cell(row.get(c)) for c in COLUMNS)]
        rate = row.get("samples_per_s")
        lines.append("| " + " | ".join([*cells, f"{rate:,.0f}" if rate else ""]) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--file", type=Path, default=DATA)
    parser.add_argument("--format", default="rees46")
    parser.add_argument("--horizon", default="30m")
    parser.add_argument("--abandon-after", default="1h")
    parser.add_argument("--min-samples", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    base = Settings()
    embedded = not (base.kafka.bootstrap and base.redis.url)
    options = {"horizon_s": parse_duration(args.horizon), "min_samples": args.min_samples,
               "abandon_after_s": parse_duration(args.abandon_after)}  # fmt: skip
    with infrastructure(isolated(base, embedded=embedded, **options)) as settings:
        run = asyncio.run(
            run_pipeline(settings, args.file, args.format, consumer=run_state_consumer,
                         trainer=run_trainer)
        )  # fmt: skip
    report = build_report(settings, run, {"file": str(args.file), "seed": args.seed})
    samples = canonical(run.samples)
    print(f"command: python -m bench.model_quality {' '.join(sys.argv[1:])}".rstrip())
    print(f"pipeline: {report['pipeline']}")
    print(f"settings: {report['settings']}; labels_digest {report['labels_digest']}\n")
    print(markdown(variant_rows(settings, report, samples, args)))


if __name__ == "__main__":
    main()
