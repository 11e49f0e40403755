"""Whether a webhook URL may be called: https only, and never an internal address.

Checked when a subscription is saved and again before every attempt, since a name can be
re-pointed at an internal address after it was accepted (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from models.errors import ParcoursError


class TargetRefused(ParcoursError):
    """The URL may not be called; `reason` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


async def check_target(
    url: str, *, allow_http: bool, allow_private: bool, timeout_s: float
) -> None:
    """Raise `TargetRefused` unless `url` is https (or http if allowed) on a public address."""
    parts = urlsplit(url)
    allowed = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in allowed:
        raise TargetRefused(f"scheme {parts.scheme or 'none'!r} not allowed")
    if not parts.hostname:
        raise TargetRefused("no host")
    if allow_private:
        return
    for address in await _resolve(parts.hostname, parts.port, timeout_s):
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not ip.is_global or ip.is_multicast:
            raise TargetRefused(f"{parts.hostname} resolves to non-public address {ip}")


async def _resolve(host: str, port: int | None, timeout_s: float) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM), timeout_s
        )
    except (TimeoutError, OSError) as exc:
        raise TargetRefused(f"cannot resolve {host}: {exc!r}") from exc
    return [str(info[4][0]) for info in infos]
