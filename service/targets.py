"""Webhook targets Parcours may call: public https endpoints, never its own network (SSRF).

A URL is refused unless it is https (or http when allowed), carries no credentials, and its
host is a public address or a name whose every resolved address is public. Names are
resolved here, so a subscription cannot point at `localhost` or a metadata service; the
dispatcher calls `check_target` again before each delivery, because a name can be re-pointed
after it was accepted (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Final
from urllib.parse import SplitResult, urlsplit

from models.errors import ParcoursError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH: Final = 2048
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_LOCAL_NAMES: Final = ("localhost", "localhost.localdomain")


class TargetRefused(ParcoursError):
    """A webhook URL Parcours will not call; `reason` says why, for the API's 422 and logs."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


async def check_target(
    url: str, *, allow_http: bool, allow_private: bool, timeout_s: float
) -> None:
    """Raise `TargetRefused` unless `url` is a target Parcours may deliver to right now."""
    host, port = parse_target(url, allow_http=allow_http)
    if allow_private:
        return
    if _is_local_name(host):
        raise TargetRefused(f"{host} is a local host name")
    literal = _literal(host)
    addresses = [literal] if literal is not None else await _resolve(host, port, timeout_s)
    for address in addresses:
        reason = refusal(address)
        if reason is not None:
            shown = "" if literal is not None else f"{host} resolves to "
            raise TargetRefused(f"{shown}{reason}")


def parse_target(url: str, *, allow_http: bool) -> tuple[str, int]:
    """The host (lower case, IPv6 without brackets) and port of an acceptable URL's form."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise TargetRefused("the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise TargetRefused(f"the scheme must be {' or '.join(schemes)}, not {parts.scheme!r}")
    _check_authority(parts)
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise TargetRefused("the URL has no host")
    if port == 0:
        raise TargetRefused("port 0 is not a valid port")
    return host, port or (443 if parts.scheme == "https" else 80)


def refusal(address: IPAddress) -> str | None:
    """Why Parcours must not call `address` (None: it is a public address)."""
    embedded = _embedded_ipv4(address)
    ip = embedded or address
    kind = _special_kind(ip)
    if kind is None:
        return None
    via = f" (IPv4 {embedded})" if embedded is not None else ""
    return f"{address} is {kind}{via}"


def _check_authority(parts: SplitResult) -> None:
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise TargetRefused("the URL must not contain credentials (user:password@)")


def _special_kind(ip: IPAddress) -> str | None:
    """What kind of non-public address `ip` is; the specific kinds first, `is_private` last."""
    checks = (
        ("an unspecified address", ip.is_unspecified),
        ("a loopback address", ip.is_loopback),
        ("a link-local address", ip.is_link_local),
        ("a multicast address", ip.is_multicast),
        ("a site-local address", isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local),
        ("a private address", ip.is_private),
        ("a reserved address", ip.is_reserved),
        ("not a globally routable address", not ip.is_global),
    )
    return next((kind for kind, hit in checks if hit), None)


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64): it decides reachability."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _is_local_name(host: str) -> bool:
    return host in _LOCAL_NAMES or host.endswith(".localhost")


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def _resolve(host: str, port: int, timeout_s: float) -> list[IPAddress]:
    """Every address `host` resolves to; also catches numeric forms like `2130706433`."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise TargetRefused(f"resolving {host} took longer than {timeout_s:g}s") from None
    except (OSError, UnicodeError) as exc:
        raise TargetRefused(f"{host} does not resolve: {exc}") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses:
        raise TargetRefused(f"{host} resolves to no address")
    return addresses
