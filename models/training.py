"""What a trainer learns and restores: both models, the samples it already learned, its position.

A snapshot pickles one `TrainingState`, so a trainer that restarts from it continues exactly
where the snapshot was taken: samples after `offsets` are learned again (they were lost with
the process), and `recent` drops a sample that the samples topic holds twice (a consumer
republished it after a crash), so no sample is learned twice.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from models.experiment_stats import ExperimentLedger
from models.features import BASE_FEATURES, from_vector
from models.journeymap import EXIT
from models.labels import ABANDONMENT, EXPERIMENT_KINDS, Sample
from models.learners import (
    DEFAULT_QUALITY_WINDOW,
    OnlineModel,
    abandonment_model,
    next_stage_model,
)


class RecentIds:
    """The last `capacity` sample ids, oldest forgotten first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, sample_id: str) -> None:
        if self.capacity <= 0:
            return
        self._ids[sample_id] = None
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)


@dataclass
class TrainingState:
    """The two online models, the experiments' ledger and the trainer's bookkeeping; pickled
    whole into a snapshot."""

    abandonment: OnlineModel[bool]
    next_stage: OnlineModel[str]
    recent: RecentIds
    offsets: dict[int, int] = field(default_factory=dict)  # next offset per samples partition
    experiments: ExperimentLedger = field(default_factory=ExperimentLedger)

    def __setstate__(self, data: dict[str, Any]) -> None:
        """Snapshots taken before experiments existed restore with an empty ledger."""
        self.__dict__.update(data)
        self.__dict__.setdefault("experiments", ExperimentLedger())

    def learn(self, sample: Sample) -> bool:
        """Score then learn one sample; False if it was already learned. Raises ValueError
        for a sample whose features do not match this version of `models.features`."""
        if sample.id in self.recent:
            return False
        if sample.kind in EXPERIMENT_KINDS:
            self.experiments.learn(sample.outcome())
            self.recent.add(sample.id)
            return True
        if len(sample.x) != len(BASE_FEATURES):
            raise ValueError(
                f"sample has {len(sample.x)} features, this version expects {len(BASE_FEATURES)}"
            )
        x = from_vector(sample.x, sample.stage)
        if sample.kind == ABANDONMENT:
            self.abandonment.learn_one(x, bool(sample.label), stage=sample.stage)
        else:
            self.next_stage.learn_one(x, str(sample.label), stage=sample.stage)
        self.recent.add(sample.id)
        return True

    def tag(self, version: int) -> None:
        """Name the models after the snapshot version they are about to be published as."""
        self.abandonment.version = f"abandonment-v{version}"
        self.next_stage.version = f"next_stage-v{version}"

    @property
    def quality_window(self) -> int:
        """Samples the models' rolling metrics cover (the same for both)."""
        return self.abandonment.quality_window

    def set_quality_window(self, size: int) -> None:
        """Make both models' rolling metrics cover their last `size` samples."""
        self.abandonment.set_quality_window(size)
        self.next_stage.set_quality_window(size)

    def summary(self) -> dict[str, Any]:
        """Per model: served version, learner, samples seen, progressive metrics over its whole
        life and over its last `quality_window` samples (`rolling_samples` of them so far)."""
        return {
            model.task: {
                "version": model.version,
                "learner": model.pipeline_name,
                "samples": model.samples_seen,
                "min_samples": model.min_samples,
                "metrics": model.metrics(),
                "rolling_metrics": model.rolling_metrics(),
                "rolling_samples": model.rolling_samples,
            }
            for model in (self.abandonment, self.next_stage)
        }


def new_training_state(
    stages: list[str],
    *,
    abandonment_learner: str = "logreg",
    next_stage_learner: str = "softmax",
    min_samples: int = 500,
    dedup_window: int = 50_000,
    quality_window: int = DEFAULT_QUALITY_WINDOW,
) -> TrainingState:
    """Untrained models for a journey map's stages: both serve their fallback at first."""
    return TrainingState(
        abandonment=abandonment_model(
            pipeline=abandonment_learner, min_samples=min_samples, quality_window=quality_window
        ),
        next_stage=next_stage_model(
            pipeline=next_stage_learner,
            min_samples=min_samples,
            quality_window=quality_window,
            classes=[*stages, EXIT],
        ),
        recent=RecentIds(dedup_window),
    )
