"""The journey gauges on /metrics: customers per stage, open carts, their value and risk.

They are global (counted in Redis over every journey), so any API process can export them;
each scrape refreshes them at most every `min_interval_s`, within a time limit, and a failed
refresh keeps the last values (`parcours_api_dependency_up` says Redis is down).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from service.errors import StoreUnavailable
from service.metrics import ApiMetrics
from service.store import JourneyStore

logger = logging.getLogger(__name__)


class JourneyGaugeExporter:
    """Refreshes the journey gauges in `metrics` from the store, rate-limited."""

    def __init__(
        self,
        store: JourneyStore,
        stages: Sequence[str],
        metrics: ApiMetrics,
        *,
        min_interval_s: float,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._stages = list(stages)
        self._metrics = metrics
        self._min_interval_s = min_interval_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._last = float("-inf")
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Read the gauges unless they were read less than `min_interval_s` ago."""
        async with self._lock:  # concurrent scrapes share one read
            if self._clock() - self._last < self._min_interval_s:
                return
            try:
                found = await asyncio.wait_for(self._store.gauges(self._stages), self._timeout_s)
            except (StoreUnavailable, TimeoutError) as exc:
                logger.warning("journey gauges not refreshed: %s", exc)
                return
            self._last = self._clock()
        m = self._metrics
        for stage, count in found.customers.items():
            m.journey_customers.labels(stage).set(count)
        m.open_carts.set(found.open_carts)
        m.open_cart_value.set(found.cart_value)
        m.cart_value_at_risk.set(found.value_at_risk)
