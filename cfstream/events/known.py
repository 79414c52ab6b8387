"""What the events reader has learned: the most advanced event of every id it read, for a
bounded number of ids, and how far back that memory is whole on each partition.

Every record the reader takes is noted here, whoever waits on its id, so a wait that begins after
its execution finished (a loop over results, a deferral's successor, ``status()``) is answered
from memory instead of from Kafka. An entry keeps the record's bytes, parsed again only when
asked for. When the memory is full the oldest entry goes. A wait on an id it does not hold must
then tell a new id (its events are still to come) from a forgotten one (read again from Kafka):
:meth:`KnownEvents.forgotten` does, from a filter of the ids forgotten lately and, for those
forgotten before, from how far on their partition they lay.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from cfstream.codec import loads
from cfstream.wire import EVENT_RANK

Event = dict[str, Any]

# `undelivered` is the waiters' own: the call never reached Kafka.
RANK = {**EVENT_RANK, "undelivered": EVENT_RANK["succeeded"]}
# A waiter is done with an id at its `deferred` event (it follows the successor) or its end.
SETTLED = RANK["deferred"]
# Bytes of records kept at most (results and tracebacks can be large): 64 MiB.
MAX_BYTES = 64 << 20
# Forgotten ids told apart per generation; two generations at 20k events/s cover ~25 s, so a
# wait on a new id is not taken for one of them.
FORGET_GENERATION = 262_144
# Bits of a generation's filter (1 MiB): 2 bits an id, so few false positives when full.
FILTER_BITS = 1 << 23


@dataclass(slots=True)
class Known:
    """One id's most advanced event so far, and where its last record read lies."""

    id: str
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
    (the records of every forgotten id lie at or below it). ``this_id``: the id asked about is
    likely one of them; otherwise only ids from before ``ts`` can be."""

    offset: int
    ts: int
    this_id: bool = False

    def widen(self, offset: int, ts: int) -> None:
        self.offset, self.ts = max(self.offset, offset), max(self.ts, ts)


class Generation:
    """Ids forgotten while this generation was the newest: a Bloom filter of their hashes (two
    bits each; about 0.4 % false positives when full) and, per partition, how far they lie."""

    def __init__(self, bits: int) -> None:
        self.mask = bits - 1
        self.bits = bytearray(bits // 8)
        self.count = 0
        self.bounds: dict[int, Forgotten] = {}

    def add(self, known: Known) -> None:  # once a record read, when full: kept plain
        h, mask, bits = hash(known.id), self.mask, self.bits
        first, second = h & mask, (h >> 32) & mask
        bits[first >> 3] |= 1 << (first & 7)
        bits[second >> 3] |= 1 << (second & 7)
        self.count += 1
        bound = self.bounds.get(known.partition)
        if bound is None:
            self.bounds[known.partition] = Forgotten(known.offset, known.ts)
        else:  # ids go in the order they came, which is not offset order after a look back
            if known.offset > bound.offset:
                bound.offset = known.offset
            if known.ts > bound.ts:
                bound.ts = known.ts

    def __contains__(self, execution_id: str) -> bool:
        return all(self.bits[bit >> 3] & (1 << (bit & 7)) for bit in self._bits(execution_id))

    def _bits(self, execution_id: str) -> tuple[int, int]:
        h = hash(execution_id)
        return h & self.mask, (h >> 32) & self.mask


class KnownEvents:
    """Not thread-safe: the events reader holds its lock around every call.

    Forgotten ids are kept track of in two generations of ``forget_generation`` ids each; of
    those forgotten before, only how far they lay on each partition."""

    def __init__(self, capacity: int, max_bytes: int = MAX_BYTES,
                 forget_generation: int = FORGET_GENERATION) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.forget_generation = forget_generation
        self.bytes = 0  # of the records kept
        self._entries: dict[str, Known] = {}
        # The entries in the order they came. (Taking the first key of a dict that has lost
        # its first keys scans the holes they left: most of the reader's time, once full.)
        self._order: deque[Known] = deque()
        self._generations: list[Generation] = []  # the newest first; made at the first need
        self._lost: dict[int, Forgotten] = {}  # of the generations let go of

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
            known = Known(execution_id, order[0], order[1], raw, partition, offset, ts)
            entries[execution_id] = known
            self._order.append(known)
            self.bytes += len(raw)
            while len(entries) > self.capacity or (self.bytes > self.max_bytes
                                                   and len(entries) > 1):
                self._forget_oldest()
            return known
        if order >= (known.attempt, known.rank):
            self.bytes += len(raw) - len(known.raw)
            known.attempt, known.rank, known.raw = order[0], order[1], raw
        if offset > known.offset:
            known.offset, known.ts = offset, max(known.ts, ts)
        return known

    def forgotten(self, execution_id: str, partition: int) -> Forgotten | None:
        """How far the records of ``execution_id`` may lie on ``partition`` if it is not
        remembered because it was forgotten; None if nothing there was forgotten."""
        for generation in self._generations:
            if execution_id in generation and partition in generation.bounds:
                found = Forgotten(-1, 0, this_id=True)
                for each in self._generations:  # the id may be of either
                    bound = each.bounds.get(partition)
                    if bound is not None:
                        found.widen(bound.offset, bound.ts)
                return found
        lost = self._lost.get(partition)
        return None if lost is None else Forgotten(lost.offset, lost.ts)

    def _forget_oldest(self) -> None:
        known = self._order.popleft()
        del self._entries[known.id]
        self.bytes -= len(known.raw)
        if not self._generations or self._generations[0].count >= self.forget_generation:
            self._generations.insert(0, Generation(FILTER_BITS))
            if len(self._generations) > 2:
                for partition, bound in self._generations.pop().bounds.items():
                    lost = self._lost.setdefault(partition, Forgotten(bound.offset, bound.ts))
                    lost.widen(bound.offset, bound.ts)
        self._generations[0].add(known)
