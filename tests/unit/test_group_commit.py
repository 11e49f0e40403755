"""Group commit: callers return only once their item is written, and writes carry everything
that arrived meanwhile."""

from __future__ import annotations

import asyncio

import pytest

from consumers.group_commit import GroupCommit

pytestmark = pytest.mark.asyncio


class Writer:
    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def write(self, items: list[int]) -> None:
        self.calls.append(items)
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail


async def test_items_arriving_during_a_write_go_together_in_the_next() -> None:
    writer = Writer()
    group = GroupCommit[int](writer.write)
    task = asyncio.create_task(group.run())
    writer.gate.clear()
    first = asyncio.create_task(group.add(1))
    await asyncio.sleep(0.01)
    later = [asyncio.create_task(group.add(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0.01)
    assert writer.calls == [[1]]
    assert not first.done()
    writer.gate.set()
    await asyncio.gather(first, *later)
    assert writer.calls == [[1], [2, 3, 4]]
    task.cancel()


async def test_a_caller_does_not_return_before_its_write_is_done() -> None:
    writer = Writer()
    group = GroupCommit[int](writer.write)
    task = asyncio.create_task(group.run())
    writer.gate.clear()
    adding = asyncio.create_task(group.add(7))
    await asyncio.sleep(0.02)
    assert writer.calls == [[7]]
    assert not adding.done()
    writer.gate.set()
    await asyncio.wait_for(adding, 1)
    task.cancel()


async def test_a_failed_write_fails_its_callers_and_the_writer() -> None:
    writer = Writer()
    writer.fail = RuntimeError("redis gone for good")
    group = GroupCommit[int](writer.write)
    task = asyncio.create_task(group.run())
    with pytest.raises(RuntimeError, match="redis gone"):
        await asyncio.wait_for(group.add(1), 1)
    with pytest.raises(RuntimeError, match="redis gone"):
        await asyncio.wait_for(task, 1)


async def test_stopping_the_writer_releases_waiting_callers() -> None:
    writer = Writer()
    writer.gate.clear()
    group = GroupCommit[int](writer.write)
    task = asyncio.create_task(group.run())
    adding = asyncio.create_task(group.add(1))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(adding, 1)
