"""One webhook attempt against a real loopback server: what the sender reports and refuses.

Redirects must not be followed (the followed target would escape the target check), a huge
answer body must not be read whole, and every failure becomes an `AttemptResult`, never an
exception out of `send`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from models.delivery import PendingDelivery
from models.triggers import Trigger
from models.webhooks import Subscription
from service.settings import WebhookSettings
from service.webhook_sender import MAX_RESPONSE_BYTES, WebhookSender, make_http_client

pytestmark = pytest.mark.asyncio

SETTINGS = WebhookSettings(allow_http=True, allow_private_targets=True, timeout_s=2.0)


class Server:
    """Answers every request with `answer`; records each request line it reads."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.paths: list[str] = []
        self.port = 0

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.paths.append(head.split(b" ", 2)[1].decode())
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                writer.write(self.answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def sender() -> AsyncIterator[WebhookSender]:
    async with make_http_client(SETTINGS) as client:
        yield WebhookSender(client, SETTINGS)


def _delivery() -> tuple[Subscription, PendingDelivery]:
    trigger = Trigger("t-1", "cart.abandoned", "c-1", "retail", 1_700_000_000_000, {"x": 1})
    return (
        Subscription("sub-1", "", frozenset(), "s3cret"),
        PendingDelivery(trigger, "sub-1", "d-1"),
    )


def _at(sub: Subscription, port: int, path: str = "/hook") -> Subscription:
    return Subscription(sub.id, f"http://127.0.0.1:{port}{path}", sub.triggers, sub.secret)


async def test_a_redirect_is_a_failed_attempt_and_is_not_followed(sender: WebhookSender) -> None:
    async with Server(
        b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"
    ) as server:
        sub, delivery = _delivery()
        result = await sender.send(_at(sub, server.port), delivery)
    assert (result.status, result.error) == (302, "HTTP 302")
    assert server.paths == ["/hook"]


async def test_a_huge_answer_is_cut_and_the_delivery_still_counts(sender: WebhookSender) -> None:
    body = b"x" * (MAX_RESPONSE_BYTES * 20)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    async with Server(answer) as server:
        sub, delivery = _delivery()
        first = await sender.send(_at(sub, server.port), delivery)
        second = await sender.send(_at(sub, server.port), delivery)
    assert (first.status, first.error, second.status, second.error) == (200, None, 200, None)
    assert server.paths == ["/hook", "/hook"]


async def test_a_malformed_answer_is_a_failed_attempt_naming_the_error(
    sender: WebhookSender,
) -> None:
    async with Server(b"this is not HTTP\r\n\r\n") as server:
        sub, delivery = _delivery()
        result = await sender.send(_at(sub, server.port), delivery)
    assert result.status is None
    assert result.error is not None
    assert "Error" in result.error


async def test_a_closed_port_is_a_failed_attempt(sender: WebhookSender) -> None:
    async with Server(b"") as server:
        port = server.port
    sub, delivery = _delivery()
    result = await sender.send(_at(sub, port), delivery)
    assert result.status is None
    assert result.error is not None
    assert result.verdict == "retry"
