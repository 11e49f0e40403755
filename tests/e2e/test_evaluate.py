"""`parcours evaluate` end to end: the shipped REES46 slice through the real pipeline, twice."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.replay import SAMPLE_FILE
from service.settings import get_settings
from tests.conftest import make_settings
from tests.support import settings_env

pytestmark = pytest.mark.slow

# The slice spans 10 minutes: short horizons let labels resolve (and both outcomes occur).
OPTIONS = ["--horizon", "4m", "--abandon-after", "4m", "--min-samples", "200", "--seed", "3"]


@pytest.fixture(scope="module")
def reports(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    """Two evaluations of the same file, each in its own topics, groups and key prefix."""
    out: list[dict[str, Any]] = []
    env = settings_env(make_settings(kafka_bootstrap, redis_url))
    for run in range(2):
        path = tmp_path_factory.mktemp("evaluate") / f"run{run}.json"
        get_settings.cache_clear()
        started = time.monotonic()
        result = CliRunner().invoke(
            app, ["evaluate", str(SAMPLE_FILE), *OPTIONS, "--json", str(path)], env=env
        )
        assert result.exit_code == 0, result.output
        assert "labels_digest" in result.output
        out.append({**orjson.loads(Path(path).read_bytes()), "_s": time.monotonic() - started})
    get_settings.cache_clear()
    return out


def _metrics(report: dict[str, Any]) -> dict[str, Any]:
    return {task: report[task]["rows"] for task in ("abandonment", "next_stage")}


def test_evaluate_twice_gives_identical_labels_and_canonical_metrics(
    reports: list[dict[str, Any]],
) -> None:
    first, second = reports

    assert first["pipeline"]["sent"] == 4170
    assert first["labels_digest"] == second["labels_digest"]
    assert first["samples"] == second["samples"]
    assert first["pipeline"]["censored"] == second["pipeline"]["censored"]
    assert _metrics(first) == _metrics(second)


def test_evaluate_reports_finite_metrics_for_both_tasks(reports: list[dict[str, Any]]) -> None:
    report = reports[0]

    assert report["samples"]["abandonment"] > 0
    assert report["samples"]["next_stage"] > 0
    assert report["pipeline"]["censored"]["next_stage"] > 0
    for task, rows in _metrics(report).items():
        models = {row["model"] for row in rows}
        assert {"online", "prior_rate" if task == "abandonment" else "markov_chain"} <= models
        for row in rows:
            for name, value in row.items():
                if isinstance(value, float):
                    assert math.isfinite(value), (task, row["model"], name)


def test_evaluate_live_trainer_publishes_its_final_snapshot(
    reports: list[dict[str, Any]],
) -> None:
    report = reports[0]

    assert report["pipeline"]["problems"] == []
    assert report["live_trainer"]["snapshot"]["version"] is not None
