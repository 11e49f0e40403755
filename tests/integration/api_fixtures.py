"""The HTTP API in-process against the real broker and Redis, and helpers to inspect its topic.

Import `api_fixture` into a test module for the `api` fixture; `running_api` takes any settings.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner
from fastapi import FastAPI

from service.api.app import create_app
from service.settings import Settings
from tests.support import Record, produce, read_records


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings


@contextlib.asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[Api]:
    """`create_app(settings)` with its lifespan entered, and a client calling it in-process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(app, client, settings)


@pytest.fixture(name="api")
async def api_fixture(settings: Settings) -> AsyncIterator[Api]:
    async with running_api(settings) as running:
        yield running


def event(index: int = 0, **fields: Any) -> dict[str, Any]:
    """A valid contract event; `fields` replace or add top-level fields."""
    body: dict[str, Any] = {
        "event_id": f"evt-{index}",
        "customer_id": "c-1",
        "type": "page_view",
        "channel": "web",
        "timestamp": "2026-11-20T10:15:00Z",
        "session_id": "s-1",
        "properties": {"url": "https://shop.example/"},
    }
    return body | fields


SENTINEL: Final = b"__sentinel__"


def _sentinel_keys(partitions: int) -> list[bytes]:
    """One key per partition, by the producer's own partitioner."""
    partitioner = DefaultPartitioner()
    keys: dict[int, bytes] = {}
    candidates = (f"sentinel-{i}".encode() for i in itertools.count())
    while len(keys) < partitions:
        key = next(candidates)
        keys.setdefault(partitioner(key, list(range(partitions)), list(range(partitions))), key)
    return [keys[p] for p in range(partitions)]


async def topic_records(settings: Settings) -> list[Record]:
    """Everything the events topic holds, in (partition, offset) order.

    Tansu's ListOffsets can report an end offset short of the last record, so the ends come
    from acknowledged sentinels instead: one produced to every partition, after anything else
    there; everything below them is read back and the sentinels are dropped.
    """
    bootstrap, topic = settings.kafka.bootstrap or "", settings.kafka.events_topic
    keys = _sentinel_keys(settings.kafka.partitions)
    ends = await produce(bootstrap, topic, [(key, SENTINEL) for key in keys])
    assert sorted(ends) == list(range(settings.kafka.partitions)), ends
    records = await read_records(bootstrap, topic, ends)
    assert [r.key for r in records if r.value == SENTINEL] == keys
    return [r for r in records if r.value != SENTINEL]


async def assert_nothing_produced(settings: Settings) -> None:
    records = await topic_records(settings)
    assert not records, f"the API produced records it must not have: {records}"
