"""Which offsets a worker may commit (cfstream.worker.offsets)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cfstream.worker.offsets import OffsetTracker

Offsets = list[tuple[int, int]]  # (partition, offset), in the order they happen


def tracker_after(taken: Offsets, finished: Offsets) -> OffsetTracker:
    """A tracker that took ``taken``, then finished ``finished``, each in its order."""
    tracker = OffsetTracker()
    for partition, offset in taken:
        tracker.take(partition, offset)
    for partition, offset in finished:
        tracker.finish(partition, offset)
    return tracker


def test_nothing_to_commit_before_anything_finishes() -> None:
    tracker = OffsetTracker()
    assert tracker.committable() == {}
    tracker.take(0, 10)
    assert tracker.committable() == {}
    assert tracker.pending(0) == 1
    assert tracker.pending(7) == 0


def test_commit_point_is_one_past_the_finished_offset() -> None:
    tracker = tracker_after([(0, 10)], [(0, 10)])
    assert tracker.committable() == {0: 11}
    assert tracker.pending(0) == 0


def test_out_of_order_finish_waits_for_the_oldest_offset() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.take(0, offset)

    tracker.finish(0, 12)
    tracker.finish(0, 11)
    assert tracker.committable() == {}  # 10 still running: committing 12 would lose it
    assert tracker.pending(0) == 3

    tracker.finish(0, 10)
    assert tracker.committable() == {0: 13}
    assert tracker.pending(0) == 0


def test_commit_point_stops_at_the_first_unfinished_offset() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12, 13):
        tracker.take(0, offset)
    tracker.finish(0, 10)
    tracker.finish(0, 11)
    tracker.finish(0, 13)

    assert tracker.committable() == {0: 12}
    assert tracker.pending(0) == 2
    tracker.finish(0, 12)
    assert tracker.committable() == {0: 14}


def test_gaps_in_taken_offsets_do_not_block() -> None:
    # Compaction and transaction markers leave holes in a partition's offsets.
    tracker = tracker_after([(0, 5), (0, 9)], [(0, 9), (0, 5)])
    assert tracker.committable() == {0: 10}


def test_only_partitions_that_advanced_since_last_asked_are_reported() -> None:
    tracker = OffsetTracker()
    tracker.take(0, 1)
    tracker.take(1, 1)
    tracker.finish(0, 1)
    assert tracker.committable() == {0: 2}
    assert tracker.committable() == {}

    tracker.take(0, 2)
    tracker.finish(1, 1)
    assert tracker.committable() == {1: 2}


def test_partitions_are_independent() -> None:
    tracker = tracker_after([(0, 100), (1, 7)], [(1, 7)])
    assert tracker.committable() == {1: 8}


def test_forget_drops_a_revoked_partition() -> None:
    tracker = OffsetTracker()
    tracker.take(0, 1)
    tracker.take(0, 2)
    tracker.take(1, 1)
    tracker.forget(0)

    assert tracker.pending(0) == 0
    tracker.finish(0, 1)  # a late finish for a partition that is not ours any more
    tracker.finish(0, 2)
    tracker.finish(1, 1)
    assert tracker.committable() == {1: 2}

    tracker.forget(5)  # unknown partition: nothing happens
    tracker.take(0, 50)  # reassigned later: starts afresh
    tracker.finish(0, 50)
    assert tracker.committable() == {0: 51}


@given(st.integers(1, 30).flatmap(lambda n: st.permutations(list(range(n)))))
def test_commit_point_never_passes_an_unfinished_offset(order: list[int]) -> None:
    tracker = OffsetTracker()
    for offset in range(len(order)):
        tracker.take(3, offset)
    committed = 0
    done: set[int] = set()
    for offset in order:
        tracker.finish(3, offset)
        done.add(offset)
        committed = tracker.committable().get(3, committed)
        expected = 0
        while expected in done:
            expected += 1
        assert committed == expected
    assert committed == len(order)


def test_a_failed_commit_is_offered_again_until_revoked() -> None:
    tracker = tracker_after([(0, 10), (1, 20)], [(0, 10), (1, 20)])
    assert tracker.committable() == {0: 11, 1: 21}
    tracker.not_committed({0: 11, 1: 21})  # e.g. REBALANCE_IN_PROGRESS
    tracker.forget(1)
    assert tracker.committable() == {0: 11}  # nothing new finished: offered again all the same
    assert tracker.committable() == {}
    tracker.take(0, 11)
    tracker.not_committed({0: 11})
    tracker.finish(0, 11)
    assert tracker.committable() == {0: 12}  # the newer point wins
