"""Which offset a partition may commit when its records finish out of order.

A trigger record is done when every delivery it fanned out to has settled (delivered,
dead-lettered or parked in Redis). Deliveries to different receivers settle in any order, so
the committable position is the end of the contiguous run of done records from the last
commit: committing past an unsettled record would lose it on a crash.

Each assignment of a partition gets a new generation; a delivery still in flight from an
earlier ownership settles nothing in the current one.

>>> t = OffsetTracker()
>>> g = t.assign(0)
>>> t.add(0, 5, 2); t.add(0, 6, 1); t.add(0, 7, 0)
>>> t.settle(0, g, 6); t.committable(0)
>>> t.settle(0, g, 5); t.settle(0, g, 5); t.committable(0)
8
"""

from __future__ import annotations

from collections import OrderedDict


class OffsetTracker:
    """Outstanding deliveries per record, per partition; see the module docstring."""

    def __init__(self) -> None:
        self._open: dict[int, OrderedDict[int, int]] = {}
        self._generation: dict[int, int] = {}
        self._next: dict[int, int] = {}
        self._counter = 0

    def assign(self, partition: int) -> int:
        """Start tracking `partition` afresh; returns the generation deliveries must carry."""
        self._counter += 1
        self._generation[partition] = self._counter
        self._open[partition] = OrderedDict()
        self._next.pop(partition, None)
        return self._counter

    def forget(self, partition: int) -> None:
        self._open.pop(partition, None)
        self._generation.pop(partition, None)
        self._next.pop(partition, None)

    def generation(self, partition: int) -> int | None:
        return self._generation.get(partition)

    def add(self, partition: int, offset: int, deliveries: int) -> None:
        """A record read in offset order, with how many deliveries it waits for (may be 0)."""
        self._open[partition][offset] = deliveries

    def settle(self, partition: int, generation: int, offset: int) -> None:
        """One delivery of the record at `offset` is settled (ignored if from a past owner)."""
        if self._generation.get(partition) != generation:
            return
        records = self._open[partition]
        if offset in records and records[offset] > 0:
            records[offset] -= 1

    def committable(self, partition: int) -> int | None:
        """The offset `partition` may commit now (None until its first record is done)."""
        records = self._open.get(partition)
        if records is None:
            return None
        while records:
            offset, remaining = next(iter(records.items()))
            if remaining:
                break
            records.popitem(last=False)
            self._next[partition] = offset + 1
        return self._next.get(partition)

    def pending(self, partition: int | None = None) -> int:
        """Unsettled deliveries, in one partition or all of them."""
        parts = [partition] if partition is not None else list(self._open)
        return sum(sum(self._open.get(p, {}).values()) for p in parts)

    def partitions(self) -> list[int]:
        return list(self._open)
