"""One signed HTTP attempt at a webhook delivery, shared by the dispatcher and the API.

The target is checked before every attempt (a name accepted earlier may now resolve to an
internal address), redirects are not followed (they would bypass that check), and the whole
attempt, connect to last body byte, is bounded by one timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from importlib.metadata import version

import httpx

from models.delivery import AttemptResult, PendingDelivery, parse_retry_after
from models.webhooks import (
    HEADER_DELIVERY,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    HEADER_TRIGGER,
    HEADER_TYPE,
    Subscription,
    sign,
)
from service.settings import WebhookSettings
from service.targets import TargetRefused, check_target

USER_AGENT = f"Parcours-Webhooks/{version('parcours')}"


def make_http_client(webhooks: WebhookSettings) -> httpx.AsyncClient:
    """The process's one webhook client: pooled connections, bounded, no redirects."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(webhooks.timeout_s),
        limits=httpx.Limits(
            max_connections=webhooks.max_connections,
            max_keepalive_connections=webhooks.max_connections,
            keepalive_expiry=30.0,
        ),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
    )


class WebhookSender:
    """Sends a delivery once and reports what happened; never raises for the receiver's faults."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        webhooks: WebhookSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._settings = webhooks
        self._clock = clock

    async def send(self, sub: Subscription, delivery: PendingDelivery) -> AttemptResult:
        settings, started = self._settings, time.monotonic()
        try:
            await check_target(
                sub.url,
                allow_http=settings.allow_http,
                allow_private=settings.allow_private_targets,
                timeout_s=settings.resolve_timeout_s,
            )
        except TargetRefused as exc:
            return AttemptResult(None, time.monotonic() - started, exc.reason, refused=True)
        body = delivery.trigger.to_json()
        now = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            HEADER_DELIVERY: delivery.delivery_id,
            HEADER_TRIGGER: delivery.trigger.id,
            HEADER_TYPE: delivery.trigger.type,
            HEADER_TIMESTAMP: str(now),
            HEADER_SIGNATURE: sign(sub.secret, now, body),
        }
        try:
            async with asyncio.timeout(settings.timeout_s):
                response = await self._client.post(sub.url, content=body, headers=headers)
        except (TimeoutError, httpx.TimeoutException):
            return AttemptResult(None, time.monotonic() - started, "timeout")
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
            return AttemptResult(None, time.monotonic() - started, error)
        latency = time.monotonic() - started
        retry_after = None
        if response.status_code in (429, 503):
            retry_after = parse_retry_after(response.headers.get("Retry-After"), self._clock())
        failure = None if response.is_success else f"HTTP {response.status_code}"
        return AttemptResult(response.status_code, latency, failure, retry_after)
