"""Which offsets a worker may commit: only those below every execution it has not finished."""

from __future__ import annotations

from collections import deque


class OffsetTracker:
    """Per partition, the offsets taken in order and the ones finished (in any order)."""

    def __init__(self) -> None:
        self._taken: dict[int, deque[int]] = {}
        self._finished: dict[int, set[int]] = {}
        self._next: dict[int, int] = {}

    def take(self, partition: int, offset: int) -> None:
        self._taken.setdefault(partition, deque()).append(offset)
        self._finished.setdefault(partition, set())

    def finish(self, partition: int, offset: int) -> None:
        if partition in self._finished:
            self._finished[partition].add(offset)

    def committable(self) -> dict[int, int]:
        """Partition -> next offset to commit, for partitions that advanced since last asked."""
        out = {}
        for partition, taken in self._taken.items():
            finished = self._finished[partition]
            advanced = None
            while taken and taken[0] in finished:
                finished.discard(taken[0])
                advanced = taken.popleft() + 1
            if advanced is not None:
                self._next[partition] = advanced
                out[partition] = advanced
        return out

    def pending(self, partition: int) -> int:
        return len(self._taken.get(partition, ()))

    def forget(self, partition: int) -> None:
        """Drop a revoked partition: its unfinished offsets are the new owner's now."""
        self._taken.pop(partition, None)
        self._finished.pop(partition, None)
        self._next.pop(partition, None)
