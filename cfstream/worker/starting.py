"""Executions between the backlog and the task threads.

A task's body begins only once its ``started`` event is on Kafka: if the worker dies mid-run, the
next owner of the partition sees the event and does not run the task a second time. Waiting for
that event before each start would cap a worker at ``concurrency`` executions per broker round
trip (a few thousand a second), however short its tasks. So the worker announces executions
ahead: it produces their ``started`` events without waiting, and hands each to the task threads
once Kafka has its event; it begins when a thread is free.

How far ahead is the one trade-off. An execution announced and not yet begun when the worker
dies counts as begun and lost (see :mod:`cfstream.worker.dedupe`). So beyond one per thread, the
worker announces only as many as its threads finish in :data:`ROUND_TRIPS_AHEAD` round trips to
Kafka (executions finished a second, over the last :data:`RATE_WINDOW`, times the round trips),
at most :data:`MOST_AHEAD_PER_THREAD` per thread. The rate is capped at what the threads can
finish, one execution each per task's average run: tasks that end together would otherwise
count as a burst (eight 1 s tasks ending in one window read as 40 a second). A crash then
loses, besides the executions running, about those that would have begun within those round
trips (tens of milliseconds of work, at most MOST_AHEAD_PER_THREAD a thread). When fewer than
one execution ends in that time (8 threads, a 5 ms round trip, tasks of over 320 ms), or none
ends for RATE_WINDOW, nothing is announced beyond the free threads.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator

from cfstream.worker.jobs import Job

# At most this many executions per task thread are announced beyond the threads.
MOST_AHEAD_PER_THREAD = 64
# The finish rate is counted over this many seconds.
RATE_WINDOW = 0.2
# Announced ahead: what the threads finish in this many round trips. One would only hold the
# rate reached so far, and less: the round trip is measured to the delivery report, a shorter
# way than to a thread, and deliveries come in bursts (one request in flight, each carrying the
# records queued meanwhile). Measured (bench/worker), 1 ms sleeping tasks at 8 threads: 2 held
# them to 0.41x of 8 / 1 ms. At 4 the threads still waited for work 5-20 % of the time, between
# bursts; 12 ran 6.3k/s against 4's 5.4k/s (three alternating pairs on one broker) and 8 ran
# 6.2k/s beside 12's 6.25k/s (bench/results/worker-ahead-3b1fe2e.md). 8, not 12: a crash
# reports the announced executions lost. No-op tasks hit MOST_AHEAD_PER_THREAD either way.
ROUND_TRIPS_AHEAD = 8
# Weight of the newest sample in the running averages of round trips and run times.
SMOOTHING = 0.1


class Starts:
    """Executions announced (``started`` produced, not yet on Kafka), and the estimates that
    say how many to announce beyond the task threads."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.most_ahead = MOST_AHEAD_PER_THREAD * concurrency
        self.announced: dict[str, tuple[Job, float]] = {}  # id -> (job, when produced)
        self.round_trip: float | None = None  # seconds from produce to delivery, on average
        self.run_time: float | None = None  # seconds a task ran, on average
        self._finished: deque[float] = deque()  # when executions finished, over RATE_WINDOW

    def __len__(self) -> int:
        return len(self.announced)

    def __contains__(self, execution_id: str) -> bool:
        return execution_id in self.announced

    def jobs(self) -> Iterator[Job]:
        return (job for job, _ in self.announced.values())

    def ahead(self, now: float | None = None) -> int:
        """How many to announce beyond the task threads: as many as they finish in
        ROUND_TRIPS_AHEAD round trips (at the rate seen, at most what their average run
        allows), at most ``most_ahead``."""
        if self.round_trip is None:
            return 0
        now = time.monotonic() if now is None else now
        finished = self._finished
        while finished and finished[0] < now - RATE_WINDOW:
            finished.popleft()
        per_second = len(finished) / RATE_WINDOW
        if self.run_time:  # (0.0: too short for the clock to tell; no cap)
            per_second = min(per_second, self.concurrency / self.run_time)
        return min(self.most_ahead, int(per_second * self.round_trip * ROUND_TRIPS_AHEAD))

    def room(self, busy: int) -> int:
        """How many more executions to announce now, with ``busy`` queued or running in the
        task threads."""
        return max(0, self.concurrency + self.ahead() - busy - len(self.announced))

    def announce(self, job: Job) -> None:
        self.announced[job.id] = (job, time.monotonic())

    def delivered(self, job: Job) -> None:
        """Kafka has ``job``'s ``started`` event: it may begin."""
        _, produced = self.announced.pop(job.id)
        sample = time.monotonic() - produced
        average = self.round_trip
        self.round_trip = sample if average is None else average + SMOOTHING * (sample - average)

    def finished(self, seconds: float) -> None:
        """An execution finished, after ``seconds`` in its task slot."""
        self._finished.append(time.monotonic())
        average = self.run_time
        self.run_time = seconds if average is None else average + SMOOTHING * (seconds - average)
