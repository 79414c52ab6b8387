"""The keys an events reader has passed on one partition without parsing their records: where
each first appeared, for the last ``size`` records, and since when none has been forgotten.

A wait that begins after its id's events were read (a deferral's successor, a second waiter)
finds the offset to go back to here instead of reading the partition again from a time. Entries
are 64-bit hashes and offsets in two fixed arrays (16 bytes a record), so holding the last few
hundred thousand records costs a few MiB and one record costs two array writes.
"""

from __future__ import annotations

import time
from array import array
from collections import deque

# A time stamp is kept every this many records, to tell since when the ring holds everything.
SAMPLE_EVERY = 1024


class RecentKeys:
    def __init__(self, size: int, started_ms: int) -> None:
        self.size = size
        self.hashes = array("q", bytes(8 * size))
        self.offsets = array("q", bytes(8 * size))
        self.written = 0
        # (local ms, records written by then): the ring holds every record read since the time
        # of the first sample whose count is within the ring.
        self.samples: deque[tuple[int, int]] = deque([(started_ms, 0)])

    def add(self, key: bytes, offset: int) -> None:
        slot = self.written % self.size
        self.hashes[slot] = hash(key)
        self.offsets[slot] = offset
        self.written += 1
        if self.written % SAMPLE_EVERY == 0:
            self.samples.append((int(time.time() * 1000), self.written))

    def first_offset(self, key: bytes) -> int | None:
        """The offset of the oldest record with ``key`` the ring still holds, if any."""
        wanted = hash(key)
        if self.written <= self.size:
            ranges = [(0, self.written)]
        else:
            oldest = self.written % self.size
            ranges = [(oldest, self.size), (0, oldest)]
        for start, stop in ranges:
            try:
                return self.offsets[self.hashes.index(wanted, start, stop)]
            except ValueError:
                continue
        return None

    def complete_since(self) -> int:
        """Local ms since which every record read is still in the ring."""
        forgotten = self.written - self.size
        while len(self.samples) > 1 and self.samples[1][1] <= forgotten:
            self.samples.popleft()
        if self.samples[0][1] >= forgotten:
            return self.samples[0][0]
        # The oldest sample is partly forgotten: only from the next one on is the ring whole.
        return self.samples[1][0] if len(self.samples) > 1 else int(time.time() * 1000)
