"""`parcours evaluate` reports the live trainer's gauges: lifetime and rolling metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from service.evaluate import _live_metrics
from service.metrics import TrainerMetrics


def test_live_metrics_trainer_gauges_lifetime_and_rolling_by_model() -> None:
    metrics = TrainerMetrics(CollectorRegistry(), quality_window=300)
    metrics.progressive.labels("abandonment", "roc_auc").set(0.91)
    metrics.rolling.labels("abandonment", "roc_auc").set(0.62)
    metrics.samples.labels("abandonment").set(4000)
    metrics.rolling_samples.labels("abandonment").set(300)
    metrics.rolling.labels("next_stage", "accuracy").set(0.5)
    metrics.snapshot_bytes.set(1234)

    live = _live_metrics(metrics.registry)

    assert live == {
        "abandonment": {
            "roc_auc": 0.91,
            "samples": 4000,
            "rolling_roc_auc": 0.62,
            "rolling_samples": 300,
        },
        "next_stage": {"rolling_accuracy": 0.5},
    }
