"""Which offsets a worker may commit: only those below every execution it has not finished."""

from __future__ import annotations

from collections import deque


class OffsetTracker:
    """Per partition, the offsets taken in order and the ones finished (in any order)."""

    def __init__(self) -> None:
        self._taken: dict[int, deque[int]] = {}
        self._finished: dict[int, set[int]] = {}
        self._unsent: dict[int, int] = {}  # commits that failed, to send again
        self._next: dict[int, int] = {}  # the offset after the last one taken

    def take(self, partition: int, offset: int) -> None:
        self._taken.setdefault(partition, deque()).append(offset)
        self._finished.setdefault(partition, set())
        self._next[partition] = offset + 1

    def next_offset(self, partition: int) -> int:
        """Where the worker stands in ``partition``: the offset after the last one taken (-1:
        none taken since it was assigned). librdkafka forgets its own position at a seek,
        until the next record."""
        return self._next.get(partition, -1)

    def partitions_read(self) -> set[int]:
        """The partitions the worker has taken a record from since they were assigned."""
        return set(self._next)

    def finish(self, partition: int, offset: int) -> None:
        if partition in self._finished:
            self._finished[partition].add(offset)

    def committable(self) -> dict[int, int]:
        """Partition -> next offset to commit, for partitions that advanced since last asked
        (or whose commit failed since)."""
        out, self._unsent = self._unsent, {}
        for partition, taken in self._taken.items():
            finished = self._finished[partition]
            advanced = None
            while taken and taken[0] in finished:
                finished.discard(taken[0])
                advanced = taken.popleft() + 1
            if advanced is not None:
                out[partition] = advanced
        return out

    def not_committed(self, offsets: dict[int, int]) -> None:
        """A commit of ``offsets`` failed (a rebalance in progress, say): offer them again, or
        a partition with nothing more to finish keeps its old committed offset."""
        for partition, offset in offsets.items():
            if partition in self._taken:  # not revoked since
                self._unsent[partition] = max(offset, self._unsent.get(partition, offset))

    def pending(self, partition: int) -> int:
        return len(self._taken.get(partition, ()))

    def forget(self, partition: int) -> None:
        """Drop a revoked partition: its unfinished offsets are the new owner's now."""
        self._taken.pop(partition, None)
        self._finished.pop(partition, None)
        self._unsent.pop(partition, None)
        self._next.pop(partition, None)
