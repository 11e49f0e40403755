"""A real webhook receiver on loopback: records every request and fails when told to.

Behaviours per request: answer a status (with an optional Retry-After), hang past any timeout,
or drop the connection. `script` is consumed one request at a time; then `default` applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field

import orjson

from models.webhooks import HEADER_SIGNATURE, HEADER_TIMESTAMP, verify


@dataclass(frozen=True)
class Behaviour:
    status: int = 200
    retry_after: str | None = None
    hang: bool = False
    drop: bool = False
    delay_s: float = 0.0


OK = Behaviour()
HANG = Behaviour(hang=True)
DROP = Behaviour(drop=True)


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    status: int | None

    @property
    def trigger_id(self) -> str:
        return str(orjson.loads(self.body)["id"])

    @property
    def delivery_id(self) -> str:
        return self.headers["parcours-delivery-id"]

    def verifies(self, secret: str) -> bool:
        ts = int(self.headers[HEADER_TIMESTAMP.lower()])
        signature = self.headers[HEADER_SIGNATURE.lower()]
        return verify(secret, ts, self.body, signature, now=int(time.time()))


@dataclass
class Receiver:
    default: Behaviour = OK
    script: deque[Behaviour] = field(default_factory=deque)
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self.url

    async def stop(self) -> None:
        self._release.set()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def delivered(self) -> list[Received]:
        return [r for r in self.requests if r.status is not None and 200 <= r.status < 300]

    def delivered_triggers(self) -> set[str]:
        return {r.trigger_id for r in self.delivered()}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                behaviour = self.script.popleft() if self.script else self.default
                if behaviour.delay_s:
                    await asyncio.sleep(behaviour.delay_s)
                if behaviour.hang:
                    self.requests.append(Received(headers, body, time.monotonic(), None))
                    await self._release.wait()
                    return
                if behaviour.drop:
                    self.requests.append(Received(headers, body, time.monotonic(), None))
                    return
                self.requests.append(Received(headers, body, time.monotonic(), behaviour.status))
                extra = f"Retry-After: {behaviour.retry_after}\r\n" if behaviour.retry_after else ""
                writer.write(
                    f"HTTP/1.1 {behaviour.status} X\r\nContent-Length: 0\r\n{extra}\r\n".encode()
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()
