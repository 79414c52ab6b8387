"""Finding a calls partition that has records waiting and makes no progress."""

from __future__ import annotations

from cfstream.processor.stalls import StallWatch


def test_a_partition_waiting_at_the_same_offset_stalls_after_the_limit() -> None:
    watch = StallWatch(after_s=8)
    assert not watch.observe(0, position=3, end=10, now=100)
    assert not watch.observe(0, position=3, end=12, now=107.9)
    assert watch.observe(0, position=3, end=12, now=108)


def test_progress_or_an_empty_backlog_restarts_the_count() -> None:
    watch = StallWatch(after_s=8)
    watch.observe(0, position=3, end=10, now=100)
    assert not watch.observe(0, position=4, end=10, now=107)  # moved
    assert not watch.observe(0, position=4, end=10, now=114)
    assert watch.observe(0, position=4, end=10, now=115)
    assert not watch.observe(0, position=10, end=10, now=200)  # caught up
    assert not watch.observe(0, position=10, end=11, now=300)
    assert not watch.observe(0, position=10, end=11, now=307)


def test_partitions_are_counted_apart_and_reset_after_a_kick() -> None:
    watch = StallWatch(after_s=8)
    watch.observe(0, position=3, end=10, now=100)
    watch.observe(1, position=0, end=1, now=104)
    assert watch.observe(0, position=3, end=10, now=108)
    assert not watch.observe(1, position=0, end=1, now=108)
    watch.reset(0, now=108)
    assert not watch.observe(0, position=3, end=10, now=115)
    assert watch.observe(0, position=3, end=10, now=116)


def test_forgotten_partitions_start_over() -> None:
    watch = StallWatch(after_s=8)
    watch.observe(0, position=3, end=10, now=100)
    watch.observe(1, position=3, end=10, now=100)
    watch.forget({1})
    assert not watch.observe(0, position=3, end=10, now=108)
    assert watch.observe(1, position=3, end=10, now=108)
