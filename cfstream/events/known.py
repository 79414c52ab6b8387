"""What the events reader has learned: the most advanced event of every id it read, for a
bounded number of ids, and how far back that memory is whole on each partition.

Every record the reader takes is noted here, whoever waits on its id, so a wait that begins after
its execution finished (a loop over results, a deferral's successor, ``status()``) is answered
from memory instead of from Kafka. An entry keeps the record's bytes, parsed again only when
asked for. When the memory is full the oldest entry goes; its partition's memory is then whole
only for records after it, which :meth:`KnownEvents.forgotten` reports so that the reader goes
back to Kafka for older ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cfstream.codec import loads
from cfstream.wire import EVENT_RANK

Event = dict[str, Any]

# `undelivered` is the waiters' own: the call never reached Kafka.
RANK = {**EVENT_RANK, "undelivered": EVENT_RANK["succeeded"]}
# A waiter is done with an id at its `deferred` event (it follows the successor) or its end.
SETTLED = RANK["deferred"]


@dataclass(slots=True)
class Known:
    """One id's most advanced event so far, and where its last record read lies."""

    attempt: int
    rank: int
    raw: bytes
    partition: int
    offset: int
    ts: int

    @property
    def settled(self) -> bool:
        return self.rank >= SETTLED

    def event(self) -> Event:
        event: Event = loads(self.raw)
        return event


@dataclass(slots=True)
class Forgotten:
    """Of one partition: the highest offset and time of a record of an id that was forgotten
    (the records of every forgotten id lie at or below it)."""

    offset: int
    ts: int


class KnownEvents:
    """Not thread-safe: the events reader holds its lock around every call."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: dict[str, Known] = {}
        self._forgotten: dict[int, Forgotten] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, execution_id: str) -> Known | None:
        return self._entries.get(execution_id)

    def note(self, execution_id: str, order: tuple[int, int], raw: bytes, partition: int,
             offset: int, ts: int) -> Known:
        """Keep the record if it is the id's most advanced; returns the id's entry."""
        entries = self._entries
        known = entries.get(execution_id)
        if known is None:
            known = entries[execution_id] = Known(order[0], order[1], raw, partition, offset, ts)
            if len(entries) > self.capacity:
                self._forget_oldest()
            return known
        if order >= (known.attempt, known.rank):
            known.attempt, known.rank, known.raw = order[0], order[1], raw
        if offset > known.offset:
            known.offset, known.ts = offset, max(known.ts, ts)
        return known

    def forgotten(self, partition: int) -> Forgotten | None:
        """The newest record of ``partition`` whose id is no longer remembered, if any."""
        return self._forgotten.get(partition)

    def clear_forgotten(self, partition: int, below: int) -> None:
        """Records of ``partition`` below offset ``below`` are being read again."""
        last = self._forgotten.get(partition)
        if last is not None and last.offset < below:
            del self._forgotten[partition]

    def _forget_oldest(self) -> None:
        execution_id = next(iter(self._entries))
        known = self._entries.pop(execution_id)
        last = self._forgotten.get(known.partition)
        if last is None:
            self._forgotten[known.partition] = Forgotten(known.offset, known.ts)
        else:  # entries go in the order they came, which is not offset order after a look back
            last.offset = max(last.offset, known.offset)
            last.ts = max(last.ts, known.ts)
