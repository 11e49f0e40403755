"""What the deploy tests share: paths, the settings and commands Parcours really has, and the
metric names service/metrics.py really exports, so every file in deploy/ is checked against
the code rather than against a list kept by hand."""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import typer.main
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from service import metrics
from service.cli import app
from service.settings import Settings

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
METRIC_NAME = re.compile(r"\bparcours_[a-z0-9_]*[a-z0-9]")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


def settings_env_names() -> set[str]:
    """Every `PARCOURS_<GROUP>_<FIELD>` variable Settings reads."""
    names: set[str] = set()
    for group, info in Settings.model_fields.items():
        model = info.annotation
        assert model is not None
        names |= {f"PARCOURS_{group}_{field}".upper() for field in model.model_fields}
    return names


def settings_from_env(env: Mapping[str, Any]) -> Settings:
    """The Settings a process started with exactly these variables would read.

    Fails on a PARCOURS_* name Settings does not have (it would silently ignore it) and, through
    pydantic, on a value it would refuse at start-up.
    """
    ours = {name: str(value) for name, value in env.items() if name.startswith("PARCOURS_")}
    unknown = set(ours) - settings_env_names()
    assert not unknown, f"not Parcours settings (see service/settings.py): {sorted(unknown)}"
    with mock.patch.dict(os.environ, ours, clear=True):
        return Settings()


def parcours_commands() -> dict[str, Any]:
    """The `parcours` subcommands, as click commands (to parse arguments without running)."""
    group = typer.main.get_command(app)
    return dict(group.commands)  # type: ignore[attr-defined]


def exported_metrics() -> dict[str, MetricWrapperBase]:
    """Every metric family of service/metrics.py, by family name, each from a fresh registry."""
    found: dict[str, MetricWrapperBase] = {}
    for _, cls in inspect.getmembers(metrics, inspect.isclass):
        if cls.__module__ != metrics.__name__ or not cls.__name__.endswith("Metrics"):
            continue
        instance = cls(CollectorRegistry())
        for value in vars(instance).values():
            if isinstance(value, MetricWrapperBase):
                found[value._name] = value
    return found


def exported_series() -> dict[str, set[str]]:
    """Every series name a scrape can show, e.g. `..._total`, `..._bucket`, with its labels."""
    series: dict[str, set[str]] = {}
    for metric in exported_metrics().values():
        base = metric._name.removesuffix("_total") if metric._type == "counter" else metric._name
        labels = set(metric._labelnames)
        for suffix in _SUFFIXES[metric._type]:
            series[base + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


def metric_names(text: str) -> set[str]:
    """The `parcours_*` names a PromQL expression (or any text) mentions."""
    return set(METRIC_NAME.findall(text))


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text("utf-8"))


def load_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text("utf-8")) if doc is not None]
