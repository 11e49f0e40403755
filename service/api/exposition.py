"""Prometheus exposition for the API, served by one uvicorn worker or several.

Each worker is its own process and a scrape reaches only one of them, so with several workers
prometheus-client's multiprocess mode is on: `parcours api` points `PROMETHEUS_MULTIPROC_DIR`
at an emptied directory before the workers start, every worker's samples go to files there,
and a scrape merges them. With one worker the app's own registry is exposed as usual.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROCESS_ENV))


def share_between_workers(directory: Path | None) -> Path:
    """Turn multiprocess mode on for the workers about to start: `directory` (or a new
    temporary one) holds their samples; files left by an earlier run are removed first, or
    their counts would be added to this run's."""
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="parcours-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROCESS_ENV] = str(directory)
    return directory


def api_registry() -> CollectorRegistry:
    """The app's registry; process and runtime collectors only with a single worker (in
    multiprocess mode they would describe whichever worker answered the scrape)."""
    registry = CollectorRegistry()
    if not multiprocess_mode():
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=registry)
    return registry


def expose(registry: CollectorRegistry) -> bytes:
    """The text a scrape gets: every worker's samples merged, or this process's."""
    if not multiprocess_mode():
        return generate_latest(registry)
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
    return generate_latest(merged)


def worker_stopped() -> None:
    """Drop this worker's live gauges from the merged view (its counters stay counted)."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
