"""Group commit: many callers' small writes made durable in one call.

Each caller adds an item and waits until it is written. One writer task takes everything that
accumulated, writes it in one call, and wakes those callers; items added while a write is in
flight go in the next one. Under load a write carries many items (one Redis round trip for a
batch of deliveries instead of one each); when idle it carries one, with no added delay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """Run `start` once in a task; `write` must retry until durable or raise to crash."""

    def __init__(self, write: Callable[[list[T]], Awaitable[None]]) -> None:
        self._write = write
        self._items: list[T] = []
        self._done: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()

    async def add(self, item: T) -> None:
        """Return once `item` has been written (with whatever else was waiting)."""
        if self._done is None:
            self._done = asyncio.get_running_loop().create_future()
        done = self._done
        self._items.append(item)
        self._wake.set()
        await asyncio.shield(done)

    async def run(self) -> None:
        """The writer: never returns; cancelling it fails the callers still waiting."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                items, done = self._items, self._done
                self._items, self._done = [], None
                if not items or done is None:
                    continue
                try:
                    await self._write(items)
                except Exception as exc:
                    done.set_exception(exc)
                    raise
                except BaseException:
                    done.cancel()
                    raise
                done.set_result(None)
        finally:
            if self._done is not None:
                self._done.cancel()
