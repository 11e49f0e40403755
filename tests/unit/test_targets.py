"""Webhook targets: public https endpoints pass; anything reaching Parcours's own network fails.

Only literal addresses, numeric host forms and `localhost` are used: they resolve without DNS.
"""

from __future__ import annotations

import ipaddress

import pytest

from service.targets import TargetRefused, check_target, parse_target, refusal

PUBLIC = "https://93.184.216.34/hooks/parcours"


async def _check(url: str, *, allow_http: bool = False, allow_private: bool = False) -> None:
    await check_target(url, allow_http=allow_http, allow_private=allow_private, timeout_s=2.0)


@pytest.mark.parametrize(
    "url",
    [
        PUBLIC,
        "https://93.184.216.34:8443/hooks?team=growth",
        "https://[2606:2800:220:1:248:1893:25c8:1946]/hooks",
        "https://[2606:2800:220:1:248:1893:25c8:1946]:8443/",
        "https://[::ffff:93.184.216.34]/hooks",
        "https://[2002:5db8:d822::1]/hooks",  # 6to4 around a public IPv4
        "https://[64:ff9b::5db8:d822]/hooks",  # NAT64 around a public IPv4
        "HTTPS://93.184.216.34/Case/Kept",
    ],
)
async def test_check_target_public_https_passes(url: str) -> None:
    await _check(url)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://127.0.0.1/", "loopback"),
        ("https://127.255.255.254/", "loopback"),
        ("https://10.0.0.5/", "private"),
        ("https://172.16.0.1/", "private"),
        ("https://172.31.255.255/", "private"),
        ("https://192.168.1.1/", "private"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://0.0.0.0/", "unspecified"),
        ("https://224.0.0.1/", "multicast"),
        ("https://239.255.255.250/", "multicast"),
        ("https://240.0.0.1/", "private"),
        ("https://255.255.255.255/", "private"),
        ("https://100.64.0.1/", "not a globally routable"),
        ("https://192.0.2.10/", "private"),
        ("https://198.18.0.1/", "private"),
        ("https://[::1]/", "loopback"),
        ("https://[::]/", "unspecified"),
        ("https://[fe80::1]/", "link-local"),
        ("https://[fc00::1]/", "private"),
        ("https://[fd00:ec2::254]/", "private"),
        ("https://[fec0::1]/", "site-local"),
        ("https://[ff02::1]/", "multicast"),
        ("https://[2001:db8::1]/", "private"),
        ("https://[::ffff:127.0.0.1]/", "loopback"),
        ("https://[::ffff:7f00:1]/", "loopback"),
        ("https://[::ffff:10.1.2.3]/", "private"),
        ("https://[::ffff:169.254.169.254]/", "link-local"),
        ("https://[::127.0.0.1]/", "reserved"),
        ("https://[2002:7f00:1::]/", "loopback"),
        ("https://[2002:a00:1::]/", "private"),
        ("https://[64:ff9b::a9fe:a9fe]/", "link-local"),
        ("https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "private"),
    ],
)
async def test_check_target_non_public_literal_is_refused(url: str, kind: str) -> None:
    with pytest.raises(TargetRefused, match=kind):
        await _check(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://localhost/",
        "https://LOCALHOST:8443/",
        "https://localhost./",
        "https://api.localhost/",
        "https://localhost.localdomain/",
    ],
)
async def test_check_target_localhost_names_are_refused(url: str) -> None:
    with pytest.raises(TargetRefused, match="local host name"):
        await _check(url)


@pytest.mark.parametrize(
    "url",
    ["https://2130706433/", "https://127.1/", "https://0x7f.0.0.1/", "https://017700000001/"],
)
async def test_check_target_numeric_host_forms_are_resolved_and_refused(url: str) -> None:
    with pytest.raises(TargetRefused, match=r"resolves to 127\.0\.0\.1 is a loopback"):
        await _check(url)


async def test_check_target_unresolvable_name_is_refused() -> None:
    with pytest.raises(TargetRefused, match=r"nothing\.invalid"):
        await check_target(
            "https://nothing.invalid/", allow_http=False, allow_private=False, timeout_s=1.0
        )


async def test_check_target_http_needs_the_setting() -> None:
    with pytest.raises(TargetRefused, match="scheme must be https, not 'http'"):
        await _check("http://93.184.216.34/")

    await _check("http://93.184.216.34/", allow_http=True)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://93.184.216.34/", "scheme must be https or http, not 'ftp'"),
        ("file:///etc/passwd", "scheme must be https or http"),
        ("gopher://93.184.216.34:70/", "scheme"),
        ("93.184.216.34/hooks", "scheme"),
        ("https:///hooks", "no host"),
        ("https://user:pw@93.184.216.34/", "credentials"),
        ("https://user@93.184.216.34/", "credentials"),
        ("https://:pw@93.184.216.34/", "credentials"),
        ("https://93.184.216.34:99999/", "not a valid URL"),
        ("https://93.184.216.34:0/", "port 0"),
        ("https://93.184.216.34:x/", "not a valid URL"),
        ("https://[::1/", "not a valid URL"),
        ("https://93.184.216.34/a b", "whitespace"),
        ("https://93.184.216.34/\x00", "control characters"),
        (f"https://93.184.216.34/{'a' * 2048}", "longer than 2048"),
    ],
)
async def test_check_target_malformed_url_is_refused(url: str, message: str) -> None:
    with pytest.raises(TargetRefused, match=message):
        await _check(url, allow_http=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8080/hook",
        "http://127.0.0.1:9000/",
        "https://[::1]/",
        "https://10.0.0.5/",
        "https://169.254.169.254/",
    ],
)
async def test_check_target_private_targets_pass_when_allowed(url: str) -> None:
    await _check(url, allow_http=True, allow_private=True)


async def test_check_target_allowing_private_still_checks_the_form() -> None:
    with pytest.raises(TargetRefused, match="credentials"):
        await _check("https://u:p@localhost/", allow_private=True)
    with pytest.raises(TargetRefused, match="scheme"):
        await _check("http://localhost/", allow_private=True)


def test_parse_target_gives_host_and_default_or_explicit_port() -> None:
    assert parse_target("https://Example.COM/x", allow_http=False) == ("example.com", 443)
    assert parse_target("http://example.com./x", allow_http=True) == ("example.com", 80)
    assert parse_target("https://[2001:db8::1]:8443/", allow_http=False) == ("2001:db8::1", 8443)


def test_refusal_names_the_embedded_ipv4() -> None:
    reason = refusal(ipaddress.ip_address("::ffff:10.0.0.1"))
    assert reason == "::ffff:a00:1 is a private address (IPv4 10.0.0.1)"
    assert refusal(ipaddress.ip_address("93.184.216.34")) is None
