"""A fast webhook receiver for the latency benchmark: answers 204 and reports each request.

HTTP/1.1 with keep-alive on loopback, nothing else: no signature check, no framework, so that
what the benchmark measures is Parcours, not the receiver. For every request it writes one
tab-separated line to stdout, taken as soon as the body is read:

    <receive time, Unix seconds> <trigger id> <trigger type> <causing event id or ->

The first line is `listening <port>`.

    python -m bench.webhook_receiver --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time

import orjson

_RESPONSE = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
_FLUSH_EVERY_S = 0.05


def causing_event_id(body: bytes) -> str:
    """The id of the event a `journey.stage_changed` trigger names, or `-`."""
    try:
        event = orjson.loads(body)["payload"]["event"]
        return str(event["event_id"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "-"


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    out = sys.stdout.buffer
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            headers = {}
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
            received = time.time()
            trigger = headers.get(b"parcours-trigger-id", b"-").decode()
            kind = headers.get(b"parcours-trigger-type", b"-").decode()
            out.write(f"{received:.6f}\t{trigger}\t{kind}\t{causing_event_id(body)}\n".encode())
            writer.write(_RESPONSE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        return
    finally:
        writer.close()


async def _flush(stop: asyncio.Event) -> None:
    """Lines are written as requests come and flushed in batches; their times are already set."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), _FLUSH_EVERY_S)
        sys.stdout.buffer.flush()


async def main(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_server(_serve, "127.0.0.1", port)
    bound = server.sockets[0].getsockname()[1]
    sys.stdout.buffer.write(f"listening {bound}\n".encode())
    try:
        await _flush(stop)
    finally:
        server.close()  # not wait_closed: idle keep-alive connections would hold it open


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    asyncio.run(main(parser.parse_args().port))
