"""How far ahead a worker announces executions (cfstream.worker.starting), on its own."""

from __future__ import annotations

import time

from worker_harness import fired

from cfstream.worker.jobs import Job
from cfstream.worker.starting import (
    MOST_AHEAD_PER_THREAD,
    RATE_WINDOW,
    ROUND_TRIPS_AHEAD,
    Starts,
)


def job(n: int) -> Job:
    return Job(fired("t:record", [n]), 0, n)


def finish(starts: Starts, count: int) -> float:
    """``count`` executions finish now; returns now."""
    for _ in range(count):
        starts.finished(0.0)
    return time.monotonic()


def test_nothing_is_announced_ahead_until_a_round_trip_and_finishes_are_seen() -> None:
    starts = Starts(8)
    assert starts.ahead() == 0 and starts.room(0) == 8 and starts.room(5) == 3
    finish(starts, 100)
    assert starts.ahead() == 0  # no round trip seen yet
    starts.round_trip = 0.002
    finish(starts, 0)
    assert starts.ahead() > 0


def test_as_many_are_announced_ahead_as_the_threads_finish_in_the_round_trips_ahead() -> None:
    starts = Starts(8)
    starts.round_trip = 0.002
    now = finish(starts, 200)  # 1,000 a second over the window: 2 per round trip, times the
    # round trips ahead
    assert starts.ahead(now) == int(200 / RATE_WINDOW * 0.002 * ROUND_TRIPS_AHEAD)
    assert starts.room(8) == starts.ahead(now)
    now = finish(starts, 100_000)  # far more: capped
    assert starts.ahead(now) == MOST_AHEAD_PER_THREAD * 8


def test_once_tasks_stop_finishing_nothing_is_announced_ahead() -> None:
    starts = Starts(8)
    starts.round_trip = 0.002
    now = finish(starts, 10_000)
    assert starts.ahead(now) > 0
    assert starts.ahead(now + RATE_WINDOW * 1.01) == 0
    assert starts.room(8) == 0 and starts.room(6) == 2


def test_room_counts_what_is_announced_and_what_the_task_threads_hold() -> None:
    starts = Starts(3)
    first, second = job(1), job(2)
    starts.announce(first)
    starts.announce(second)
    assert starts.room(0) == 1 and starts.room(1) == 0
    assert first.id in starts and len(starts) == 2
    starts.delivered(second)
    assert second.id not in starts and starts.room(1) == 1
    assert starts.round_trip is not None and list(starts.jobs()) == [first]


def test_the_round_trip_follows_its_samples() -> None:
    starts = Starts(1)
    for n in range(200):
        announced = job(n)
        starts.announce(announced)
        starts.delivered(announced)
    assert starts.round_trip is not None and starts.round_trip < 0.01


def test_slow_tasks_that_end_together_are_not_taken_for_a_burst() -> None:
    """Eight 1 s tasks that end in one window read as 40 a second; the threads finish 8."""
    starts = Starts(8)
    starts.round_trip = 0.007
    assert int(8 / RATE_WINDOW * 0.007 * ROUND_TRIPS_AHEAD) == 2  # the burst alone
    for _ in range(3):
        now = time.monotonic()
        for _ in range(8):
            starts.finished(1.0)
        assert starts.ahead(now) == 0
        assert starts.room(8) == 0


def test_short_tasks_are_announced_ahead_at_the_rate_seen() -> None:
    starts = Starts(8)
    starts.round_trip = 0.002
    for _ in range(200):
        starts.finished(0.001)  # the threads could finish 8,000 a second
    assert starts.ahead(time.monotonic()) == int(200 / RATE_WINDOW * 0.002 * ROUND_TRIPS_AHEAD)
