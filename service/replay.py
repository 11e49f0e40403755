"""`parcours replay`: send a recorded event file into the pipeline, flat out or at a speed-up.

Formats: JSON lines of contract events (`jsonl`), the REES46 clickstream CSV (`rees46`) and
Instacart order lines (`instacart`), plain or gzipped; `auto` reads the first line to tell.
Every event passes the same decoder as the API; invalid lines are counted and reported with
their line numbers, never sent.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import orjson
from aiokafka import AIOKafkaProducer

from models.datasets import INSTACART_COLUMNS, REES46_COLUMNS, instacart_events, rees46_event
from models.errors import InvalidEvent
from models.events import Event, EventDecoder
from service.bus import make_producer
from service.journey import build_decoder, build_fold
from service.settings import Settings

Format = Literal["auto", "jsonl", "rees46", "instacart"]
SAMPLE: Final = "sample"
SAMPLE_FILE: Final = Path(__file__).parent / "samples" / "rees46-2019-10-01T0220.csv.gz"
_ERRORS_KEPT: Final = 10
_IN_FLIGHT: Final = 5_000


class Line(NamedTuple):
    number: int
    raw: bytes | None
    error: str | None = None


@dataclass
class ReplayReport:
    sent: int = 0
    invalid: int = 0
    errors: list[str] = field(default_factory=list)
    customers: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def reject(self, number: int, message: str) -> None:
        self.invalid += 1
        if len(self.errors) < _ERRORS_KEPT:
            self.errors.append(f"line {number}: {message}")


def resolve(path: str) -> Path:
    """`sample` is the packaged REES46 slice; anything else is a path."""
    return SAMPLE_FILE if path == SAMPLE else Path(path)


def read_lines(path: Path, fmt: Format = "auto") -> Iterator[Line]:
    """Events of a recorded file as JSON bytes, each with its line number."""
    with _open(path) as text:
        first = text.readline()
        text.seek(0)
        fmt = _detect(first, path) if fmt == "auto" else fmt
        if fmt == "jsonl":
            for number, line in enumerate(text, start=1):
                if line.strip():
                    yield Line(number, line.strip().encode())
            return
        rows = csv.DictReader(text)
        if fmt == "rees46":
            for number, row in enumerate(rows, start=2):
                yield _mapped(number, row, rees46_event)
        else:
            for number, event in enumerate(instacart_events(rows), start=1):
                yield Line(number, orjson.dumps(event))


async def replay(
    lines: Iterable[Line],
    producer: AIOKafkaProducer,
    topic: str,
    decoder: EventDecoder,
    *,
    speed: float = 0.0,
    limit: int | None = None,
) -> ReplayReport:
    """Validate and produce every line keyed by customer; `speed` > 0 paces by event time."""
    report = ReplayReport()
    started = time.monotonic()
    first_ms: int | None = None
    pending: list[asyncio.Future[Any]] = []
    for line in lines:
        if limit is not None and report.sent >= limit:
            break
        event = _validated(line, decoder, report)
        if event is None:
            continue
        if speed > 0:
            first_ms = event.timestamp_ms if first_ms is None else first_ms
            due = (event.timestamp_ms - first_ms) / 1000 / speed
            delay = due - (time.monotonic() - started)
            if delay > 0:
                await asyncio.sleep(delay)
        pending.append(await producer.send(topic, event.to_json(), key=event.customer_id.encode()))
        report.sent += 1
        report.customers[event.customer_id] += 1
        if len(pending) >= _IN_FLIGHT:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    report.seconds = time.monotonic() - started
    return report


def _validated(line: Line, decoder: EventDecoder, report: ReplayReport) -> Event | None:
    if line.error is not None or line.raw is None:
        report.reject(line.number, line.error or "empty")
        return None
    try:
        return decoder.decode(line.raw, int(time.time() * 1000))
    except InvalidEvent as exc:
        report.reject(line.number, str(exc))
        return None


def _mapped(number: int, row: dict[str, str], mapping: Callable[[dict[str, str]], Any]) -> Line:
    try:
        return Line(number, orjson.dumps(mapping(row)))
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        return Line(number, None, f"cannot map row: {exc!r}")


def _open(path: Path) -> io.TextIOWrapper:
    """Text of a plain or gzipped file; the caller closes it (closing closes the layers below)."""
    stream = gzip.open(path) if path.suffix == ".gz" else path.open("rb")  # noqa: SIM115
    return io.TextIOWrapper(stream, encoding="utf-8", newline="")


def _detect(first_line: str, path: Path) -> Format:
    if first_line.lstrip().startswith("{"):
        return "jsonl"
    header = set(first_line.strip().split(","))
    if header.issuperset(REES46_COLUMNS):
        return "rees46"
    if header.issuperset(INSTACART_COLUMNS):
        return "instacart"
    raise ValueError(f"{path}: cannot tell the format from its first line; pass --format")


async def replay_file(
    settings: Settings, path: Path, fmt: Format = "auto", *, speed: float = 0.0,
    limit: int | None = None,
) -> ReplayReport:  # fmt: skip
    """Replay a recorded file into the configured events topic, under the configured map."""
    fold = build_fold(settings.journey)
    decoder = build_decoder(settings.journey, fold.map)
    producer = make_producer(settings.kafka)
    await producer.start()
    try:
        return await replay(
            read_lines(path, fmt), producer, settings.kafka.events_topic, decoder,
            speed=speed, limit=limit,
        )  # fmt: skip
    finally:
        await producer.stop()
