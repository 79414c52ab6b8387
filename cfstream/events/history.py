"""Reading stretches of the events topic's past: a consumer of its own that reads each asked-for
range of offsets once and lets the partition go at the range's end.

The events reader tails the partitions someone waits on from where it started; what came before
(an id submitted before the wait, an old id, a memory that forgot) is read here. Kept apart, a
look back neither stops the tail for live waits nor re-reads what the tail has read, and it
starts at once: librdkafka sends one fetch at a time to a broker, so a partition added to a
consumer that sits in a long poll at the end of others waits out that poll. This consumer is at
an end only when a range reaches the end of its partition, and its polls are short.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from confluent_kafka import Consumer, Message, TopicPartition

# The broker's longest wait for more records: short, since a range never waits for new ones.
FETCH_WAIT_MS = 1


@dataclass
class Range:
    partition: int
    start: int
    end: int  # first offset not read
    # False: only the records of ids someone waits on matter (a stretch the memory forgot;
    # noting all of it again would make it forget others).
    note: bool = True
    # The next offset to read, from the records taken. The consumer's position counts only
    # once it has been seen below the end: just after the partition was assigned again it can
    # still be where the range before ended (the old assignment is let go of on another thread).
    next: int = -1
    position_counts: bool = False

    def __post_init__(self) -> None:
        self.next = self.start

    def covers(self, start: int, end: int) -> bool:
        """Whether reading on from here reads every record from ``start`` to ``end``."""
        return self.next <= start and end <= self.end


class History:
    """Ranges are read in the order asked for, one at a time per partition, every partition at
    once. Not thread-safe: the events reader's thread calls it."""

    def __init__(self, consumer: Consumer, topic: str) -> None:
        self.consumer = consumer
        self.topic = topic
        self._active: dict[int, Range] = {}
        self._queued: dict[int, deque[Range]] = {}

    @property
    def busy(self) -> bool:
        return bool(self._active)

    def read(self, partition: int, start: int, end: int, note: bool = True) -> None:
        """Read offsets ``start`` to ``end`` (not included) of ``partition``."""
        if start >= end:
            return
        wanted = Range(partition, start, end, note)
        if partition in self._active:
            self._queued.setdefault(partition, deque()).append(wanted)
        else:
            self._begin(wanted)

    def pending(self, partition: int) -> bool:
        return partition in self._active

    def will_read(self, partition: int, start: int, end: int) -> bool:
        """Whether a range asked for already reads, from here on, offsets ``start`` to ``end``
        for the ids waited on (so a wait that needs them need not ask again)."""
        ranges = [self._active.get(partition), *self._queued.get(partition, ())]
        return any(r is not None and r.covers(start, end) for r in ranges)

    def drop(self, partition: int) -> None:
        """Forget the partition's ranges (no one waits on it any more)."""
        self._queued.pop(partition, None)
        if self._active.pop(partition, None) is not None:
            self.consumer.incremental_unassign([TopicPartition(self.topic, partition)])

    def take(self, limit: int, timeout: float) -> tuple[list[Message], list[Message]]:
        """Records of the ranges being read, up to ``limit``, waiting at most ``timeout``: those
        to note, and those of ranges read only for the ids waited on."""
        messages = self.consumer.consume(limit, timeout)
        active = self._active
        noted: list[Message] = []
        watched: list[Message] = []
        for message in messages:
            current = active.get(message.partition())  # type: ignore[arg-type]
            offset = message.offset()
            if current is None or offset is None or not current.start <= offset < current.end:
                continue  # past the end: the tail reads it (or of an assignment let go of)
            current.next = offset + 1
            (noted if current.note else watched).append(message)
        self._finish_ranges()
        return noted, watched

    def _finish_ranges(self) -> None:
        """End the ranges read to their end; a position past the last record counts (a
        transaction marker or a compacted gap may hold the last offsets)."""
        if not self._active:
            return
        positions = self.consumer.position(
            [TopicPartition(self.topic, p) for p in self._active])
        for tp in positions:
            current = self._active[tp.partition]
            if tp.offset < current.end:
                current.position_counts = True
            if current.next >= current.end or (current.position_counts
                                               and tp.offset >= current.end):
                self.consumer.incremental_unassign([TopicPartition(self.topic, tp.partition)])
                del self._active[tp.partition]
                queued = self._queued.get(tp.partition)
                if queued:
                    self._begin(queued.popleft())
                    if not queued:
                        del self._queued[tp.partition]

    def _begin(self, wanted: Range) -> None:
        self._active[wanted.partition] = wanted
        self.consumer.incremental_assign(
            [TopicPartition(self.topic, wanted.partition, wanted.start)])
