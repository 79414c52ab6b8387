"""Running tasks off the worker's thread.

``concurrency`` task threads take executions from one queue, so a slot that frees up takes the
next execution at once, without a turn of the worker's loop in between. Sync tasks run in the
thread; async ones on an event loop in a thread of its own, while the task thread that took them
waits, so ``concurrency`` bounds both. Outcomes come back through a queue that the worker's
thread reads, so all Kafka work stays on that one thread. Each execution that ends is told to
``timed`` (with how long it held its thread) from the worker's thread:
:mod:`cfstream.worker.starting` paces announcements by how fast they end.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from cfstream.task import Task
from cfstream.worker import execute
from cfstream.worker.jobs import Job, Tracing

Finished = tuple[Job, execute.Outcome]


class Dispatcher:
    def __init__(self, tasks: dict[str, Task[Any, Any]], concurrency: int,
                 timed: Callable[[float], None] = lambda seconds: None,
                 spans: Tracing | None = None) -> None:
        self.tasks = tasks
        self.spans = spans  # when tracing: a job's span is current while its task runs
        self.concurrency = concurrency
        self.timed = timed
        # id -> job, from submit() until its outcome is taken: queued or running.
        self.running: dict[str, Job] = {}
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        # (job, outcome, seconds it held its thread)
        self._outcomes: queue.SimpleQueue[tuple[Job, execute.Outcome, float]] = (
            queue.SimpleQueue())
        self._threads = [threading.Thread(target=self._serve, name=f"cfstream-task_{i}",
                                          daemon=True) for i in range(concurrency)]
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever,
                                             name="cfstream-async", daemon=True)

    def open(self) -> None:
        self._loop_thread.start()
        for thread in self._threads:
            thread.start()

    def has_outcomes(self) -> bool:
        return not self._outcomes.empty()

    def submit(self, job: Job) -> None:
        """Run ``job``'s task once a task thread is free; its outcome is then among
        :meth:`outcomes`."""
        self.running[job.id] = job
        self._queue.put(job)

    def outcomes(self, wait: float = 0.0) -> list[Finished]:
        """The outcomes that came in (waiting up to ``wait`` seconds for the first); their jobs
        no longer count as running."""
        try:
            first = self._outcomes.get(timeout=wait) if wait > 0 else self._outcomes.get_nowait()
        except queue.Empty:
            return []
        taken = [first]
        while True:
            try:
                taken.append(self._outcomes.get_nowait())
            except queue.Empty:
                break
        for job, _, seconds in taken:
            self.running.pop(job.id, None)
            self.timed(seconds)
        return [(job, outcome) for job, outcome, _ in taken]

    def close(self) -> None:
        """Stop taking tasks. Those still queued or running are abandoned: their ``started``
        events are on Kafka, so the next owner of their partitions reports them lost (or
        retries them)."""
        while True:  # what is still queued is not started
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._queue.put(None)
        if self._loop_thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)

    def _serve(self) -> None:
        while (job := self._queue.get()) is not None:
            began = time.monotonic()
            outcome = self._run(job)
            self._outcomes.put((job, outcome, time.monotonic() - began))

    def _run(self, job: Job) -> execute.Outcome:
        target, ready = execute.prepare(self.tasks.get(job.call.task), job.call)
        if ready is not None:
            return ready
        if self.spans is not None:
            with self.spans.current(job):  # an async task's coroutine takes the context too
                return self._call(target, job)
        return self._call(target, job)

    def _call(self, target: Any, job: Job) -> execute.Outcome:
        try:
            if asyncio.iscoroutine(target):
                value = asyncio.run_coroutine_threadsafe(target, self._loop).result()
            else:
                value = target()
        except BaseException as exc:  # noqa: BLE001 - whatever a task raises is its outcome
            return execute.from_exception(exc)
        return execute.success(value, job.call.task)
