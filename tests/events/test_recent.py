"""The ring of keys an events reader has passed (cfstream.events.recent)."""

from __future__ import annotations

import time

from cfstream.events.recent import SAMPLE_EVERY, RecentKeys


def test_first_offsets_in_ring_order_until_forgotten() -> None:
    ring = RecentKeys(size=8, started_ms=1_000)
    for offset, key in enumerate([b"a", b"b", b"a", b"c"]):
        ring.add(key, offset)
    assert [ring.first_offset(k) for k in (b"a", b"b", b"c", b"d")] == [0, 1, 3, None]
    for offset in range(4, 12):  # eight more records: the first four are forgotten
        ring.add(b"x%d" % offset, offset)
    assert ring.first_offset(b"a") is None
    ring.add(b"a", 12)
    assert ring.first_offset(b"a") == 12
    # The oldest held record is offset 5 now, in the middle of the arrays, and the ring holds
    # a later x5 at its start: ring order counts, not array order.
    ring.add(b"x5", 13)
    assert ring.first_offset(b"x5") == 13  # offset 5 was forgotten with that add
    ring.add(b"x7", 14)
    assert ring.first_offset(b"x7") == 7


def test_complete_since_moves_once_records_are_forgotten() -> None:
    size = 4 * SAMPLE_EVERY
    ring = RecentKeys(size=size, started_ms=1_000)
    for offset in range(size):
        ring.add(b"k%d" % offset, offset)
    assert ring.complete_since() == 1_000  # nothing forgotten yet
    before = int(time.time() * 1000)
    for offset in range(size, size + SAMPLE_EVERY):
        ring.add(b"k%d" % offset, offset)
    # The first sample's records are forgotten: whole only since the second sample's time.
    assert before - 1_000 <= ring.complete_since() <= int(time.time() * 1000)
    assert ring.complete_since() > 1_000
