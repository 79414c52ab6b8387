"""A worker's backlog: executions fetched but not yet started, merged by defer key.

Without a delay, deferring still helps when work queues up: of several queued executions with the
same key only the newest runs, at the queue position of the first (so a busy key is not starved).
Running executions are never replaced: they have left the backlog.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class Queued(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def submitted_ms(self) -> int: ...


T = TypeVar("T", bound=Queued)


@dataclass(frozen=True, slots=True)
class Merge(Generic[T]):
    """``loser`` will not run; its waiters follow ``winner`` (None: a redelivered duplicate)."""

    loser: T
    winner: T | None


class Backlog(Generic[T]):
    def __init__(self) -> None:
        self._by_key: OrderedDict[str, T] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_key)

    def add(self, item: T) -> Merge[T] | None:
        """Queue ``item``; if its key is already queued, say which of the two will not run."""
        queued = self._by_key.get(item.key)
        if queued is None:
            self._by_key[item.key] = item
            return None
        if queued.id == item.id:
            return Merge(loser=item, winner=None)
        if (item.submitted_ms, item.id) < (queued.submitted_ms, queued.id):
            return Merge(loser=item, winner=queued)
        self._by_key[item.key] = item  # same position, newer call
        return Merge(loser=queued, winner=item)

    def pop(self) -> T | None:
        """The next item to start, oldest position first."""
        if not self._by_key:
            return None
        return self._by_key.popitem(last=False)[1]

    def drop(self, keep: Callable[[T], bool]) -> list[T]:
        """Remove and return the items ``keep`` rejects (for example of revoked partitions)."""
        gone = [item for item in self._by_key.values() if not keep(item)]
        for item in gone:
            del self._by_key[item.key]
        return gone
