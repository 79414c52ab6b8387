"""The events reader's memory (cfstream.events.known): the most advanced event of each id, a
bound on how many, and what a forgotten id means for its partition."""

from __future__ import annotations

from cfstream.codec import dumps
from cfstream.events.known import RANK, KnownEvents


def raw(kind: str, execution_id: str, attempt: int = 1) -> bytes:
    return dumps({"v": 1, "type": kind, "id": execution_id, "attempt": attempt})


def order(kind: str, attempt: int = 1) -> tuple[int, int]:
    return attempt, RANK[kind]


def test_an_id_keeps_its_most_advanced_event_whatever_order_they_are_read_in() -> None:
    known = KnownEvents(10)
    known.note("a", order("succeeded"), raw("succeeded", "a"), 0, 7, 1_000)
    known.note("a", order("started"), raw("started", "a"), 0, 5, 900)  # read late (a look back)
    entry = known.get("a")
    assert entry is not None and entry.settled and entry.event()["type"] == "succeeded"
    known.note("b", order("retrying"), raw("retrying", "b"), 1, 3, 1_000)
    known.note("b", order("started", 2), raw("started", "b", 2), 1, 4, 1_100)
    entry = known.get("b")
    assert entry is not None and not entry.settled
    assert entry.event() == {"v": 1, "type": "started", "id": "b", "attempt": 2}
    # Where its last record lies, whichever record is the most advanced.
    assert (entry.partition, entry.offset, entry.ts) == (1, 4, 1_100)
    assert (known.get("a").offset, known.get("a").ts) == (7, 1_000)  # type: ignore[union-attr]


def test_the_oldest_ids_are_forgotten_and_asked_about_say_up_to_where() -> None:
    """Up to the last record read of any forgotten id of the partition: its outcome may lie
    there. An id never read is not taken for a forgotten one."""
    known = KnownEvents(3)
    for i, (p, offset, ts) in enumerate([(0, 10, 100), (1, 4, 150), (0, 11, 120)]):
        known.note(f"id{i}", order("scheduled"), raw("scheduled", f"id{i}"), p, offset, ts)
    known.note("id0", order("succeeded"), raw("succeeded", "id0"), 0, 13, 210)
    for i, (p, offset, ts) in [(3, (0, 12, 200)), (4, (1, 5, 300))]:
        known.note(f"id{i}", order("succeeded"), raw("succeeded", f"id{i}"), p, offset, ts)
    assert len(known) == 3
    assert known.get("id0") is None and known.get("id1") is None
    assert [known.get(f"id{i}") is not None for i in (2, 3, 4)] == [True, True, True]
    forgotten0, forgotten1 = known.forgotten("id0", 0), known.forgotten("id1", 1)
    assert forgotten0 is not None and forgotten0.this_id
    assert (forgotten0.offset, forgotten0.ts) == (13, 210)
    assert forgotten1 is not None and (forgotten1.offset, forgotten1.ts, forgotten1.this_id) == (
        4, 150, True)
    assert known.forgotten("never-read", 0) is None
    assert known.forgotten("id0", 2) is None  # nothing of partition 2 was forgotten


def test_ids_forgotten_long_ago_are_known_only_by_how_far_they_lay() -> None:
    """Two generations of forgotten ids are told apart; before them only the offset and time
    of the newest remain, so any id from before that time may be one of them."""
    known = KnownEvents(1, forget_generation=2)
    for i in range(8):  # 7 forgotten: 4 in two generations let go of, then 2, then 1
        known.note(f"id{i}", order("succeeded"), raw("succeeded", f"id{i}"), 0, i, 100 * i)
    recent = known.forgotten("id6", 0)
    assert recent is not None and recent.this_id and recent.offset == 6
    lost = known.forgotten("id0", 0)
    assert lost is not None and not lost.this_id and (lost.offset, lost.ts) == (3, 300)
    stranger = known.forgotten("never-read", 0)
    assert stranger is not None and not stranger.this_id and stranger.offset == 3


def test_forgotten_bounds_keep_the_highest_offset_and_time() -> None:
    """Ids go in the order they were read, which is not offset order when a look back reads
    older records after newer ones."""
    known = KnownEvents(1)
    known.note("new", order("succeeded"), raw("succeeded", "new"), 0, 50, 5_000)
    known.note("old", order("succeeded"), raw("succeeded", "old"), 0, 3, 300)  # a look back
    known.note("next", order("succeeded"), raw("succeeded", "next"), 0, 51, 5_100)
    forgotten = known.forgotten("old", 0)
    assert forgotten is not None and (forgotten.offset, forgotten.ts) == (50, 5_000)


def test_large_records_are_forgotten_sooner() -> None:
    """The memory holds so many bytes of records at most, whatever the count."""
    known = KnownEvents(100, max_bytes=1_000)
    big = dumps({"v": 1, "type": "succeeded", "id": "x", "result": "r" * 400})
    for i in range(5):
        known.note(f"id{i}", order("succeeded"), big, 0, i, i)
    assert len(known) == 2 and known.bytes <= 1_000
    assert known.get("id4") is not None and known.get("id2") is None
    forgotten = known.forgotten("id2", 0)
    assert forgotten is not None and forgotten.this_id
