"""ASGI middleware that gives every request an id, and counts and times it by route template.

The id is the caller's `X-Request-ID` when it is a sane token (so a storefront can follow its
own ids through our logs), else a fresh one; it is echoed in the response header, kept in
`scope["state"]["request_id"]` for handlers and set for every log line of the request.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import time
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import request_id
from service.metrics import ApiMetrics

_HEADER: Final = b"x-request-id"
_SANE: Final = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")


class _Ids:
    """Fresh request ids: a random prefix per process and a counter (16 hex characters), as
    unique as random ids for logs and recommendation ids, without a system call each."""

    def __init__(self) -> None:
        self._renew()
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._prefix = secrets.token_hex(4)
        self._count = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._count) & 0xFFFFFFFF:08x}"


_ids = _Ids()


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == _HEADER and _SANE.match(value):
            return str(value.decode())
    return _ids.next()


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        rid = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id.set(rid)

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (_HEADER, rid.encode())]
            await send(message)

        try:
            await self._app(scope, receive, send_and_watch)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            method = scope["method"]
            self._metrics.requests_of(path, method, status).inc()
            self._metrics.latency_of(path, method).observe(time.perf_counter() - started)
            request_id.reset(token)
