"""Running tasks off the worker's thread.

At most ``concurrency`` executions run at once, of either kind. A sync task runs in one of
``concurrency`` task threads; an async one runs on an event loop in a thread of its own
(:mod:`cfstream.worker.eventloop`), and holds no task thread while it awaits. A slot that frees
up starts the next execution at once, from the thread that freed it, without a turn of the
worker's loop in between; on the event loop, an async execution that ends runs the next one in
its slot itself (see :meth:`Dispatcher._run_async`). Outcomes come
back through a queue that the worker's thread reads, so all Kafka work stays on that one thread.
Each execution that ends is told to ``timed`` (with how long it ran) from the worker's thread:
:mod:`cfstream.worker.starting` paces announcements by how fast they end.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from cfstream.task import Task
from cfstream.worker import eventloop, execute
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
        # id -> job, from submit() until its outcome is taken: waiting or running.
        self.running: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._waiting: deque[Job] = deque()  # submitted, no slot yet
        self._free = concurrency  # slots
        self._tasks: set[asyncio.Task[None]] = set()  # the loop's, held until done (it keeps
        # only weak references)
        self._sync: queue.SimpleQueue[Job | None] = queue.SimpleQueue()  # for the task threads
        # (job, outcome, seconds it ran)
        self._outcomes: queue.SimpleQueue[tuple[Job, execute.Outcome, float]] = (
            queue.SimpleQueue())
        self._threads = [threading.Thread(target=self._serve, name=f"cfstream-task_{i}",
                                          daemon=True) for i in range(concurrency)]
        self._loop = eventloop.new_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever,
                                             name="cfstream-async", daemon=True)

    def open(self) -> None:
        self._loop_thread.start()
        self._loop.call_soon_threadsafe(eventloop.sharpen_timers)  # on the loop's thread
        for thread in self._threads:
            thread.start()

    def has_outcomes(self) -> bool:
        return not self._outcomes.empty()

    def submit(self, job: Job) -> None:
        """Run ``job``'s task once a slot is free; its outcome is then among :meth:`outcomes`."""
        self.running[job.id] = job
        with self._lock:
            self._waiting.append(job)
            starting = self._take_waiting()
        self._start(starting)

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
        """Stop taking tasks. Those still waiting or running are abandoned: their ``started``
        events are on Kafka, so the next owner of their partitions reports them lost (or
        retries them)."""
        with self._lock:
            self._waiting.clear()  # not started
            self._free = 0
        for _ in self._threads:
            self._sync.put(None)
        if self._loop_thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)

    def _take_waiting(self) -> list[Job]:
        """The waiting jobs that free slots take now (the lock held)."""
        taken = []
        while self._free and self._waiting:
            taken.append(self._waiting.popleft())
            self._free -= 1
        return taken

    def _start(self, jobs: list[Job]) -> None:
        """Start ``jobs``, which hold slots: a sync one goes to the task threads, an async one
        to the event loop. From the loop's own thread, without writing to its wake-up pipe:
        1 ms async tasks ran 4.4k -> 4.8k/s (bench/results/worker-async-soon.md)."""
        on_loop = threading.current_thread() is self._loop_thread
        for job in jobs:
            if not self._runs_async(job.call.task):
                self._sync.put(job)
            elif on_loop:
                self._loop.call_soon(self._begin_async, job, time.monotonic())
            else:
                self._loop.call_soon_threadsafe(self._begin_async, job, time.monotonic())

    def _runs_async(self, name: str) -> bool:
        task = self.tasks.get(name)
        return task is not None and task.is_async

    def _finish(self, job: Job, outcome: execute.Outcome, began: float,
                keep_async: bool = False) -> Job | None:
        """From the thread that ran ``job``: report it, and start the next in its slot. With
        ``keep_async``, a next one that is async is returned instead, for the caller to run."""
        self._outcomes.put((job, outcome, time.monotonic() - began))
        with self._lock:
            self._free += 1
            starting = self._take_waiting()
        kept = None
        if keep_async and starting and self._runs_async(starting[0].call.task):
            kept = starting.pop(0)
        self._start(starting)
        return kept

    def _serve(self) -> None:
        while (job := self._sync.get()) is not None:
            began = time.monotonic()
            target, ready = execute.prepare(self.tasks.get(job.call.task), job.call)
            if ready is None:
                with self._current(job):
                    ready = self._call(target, job)
            self._finish(job, ready, began)

    def _call(self, target: Callable[[], Any], job: Job) -> execute.Outcome:
        try:
            value = target()
        except BaseException as exc:  # noqa: BLE001 - whatever a task raises is its outcome
            return execute.from_exception(exc)
        return execute.success(value, job.call.task)

    def _begin_async(self, job: Job, began: float) -> None:
        """On the event loop: an asyncio task runs ``job``, then the async jobs that take its
        slot after it."""
        task = self._loop.create_task(self._run_async(job, began))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_async(self, job: Job | None, began: float) -> None:
        """Run ``job``, and each async job that takes its slot when the one before ends, in
        this asyncio task: the next begins there and then, where a new task would begin a turn
        of the loop later, after whatever the loop runs in between (1 ms async tasks at
        concurrency 8, with the loop of :mod:`cfstream.worker.eventloop`: 5,897 -> 6,431/s,
        bench/worker). So the executions of a slot share one ``asyncio.current_task()``, as
        the events of a stream processor's agent do. A job that ends without having let the
        loop turn (it never waited) is followed by a turn, so a run of such jobs cannot hold
        the loop. After a job that cancelled the task (or was cancelled), the next job begins
        in a task of its own: a cancellation is no other job's."""
        task = asyncio.current_task()
        while job is not None:
            target, outcome = execute.prepare(self.tasks.get(job.call.task), job.call)
            turned: list[bool] = []
            if outcome is None:
                self._loop.call_soon(turned.append, True)  # runs once the loop turns
                with self._current(job):
                    try:
                        value = await target
                    except BaseException as exc:  # noqa: BLE001 - a task's exception is its outcome
                        outcome = execute.from_exception(exc)
                    else:
                        outcome = execute.success(value, job.call.task)
            clean = task is not None and not task.cancelling()
            job = self._finish(job, outcome, began, keep_async=clean)
            began = time.monotonic()
            if job is not None and not turned:
                try:
                    await asyncio.sleep(0)
                except BaseException:  # cancelled meanwhile: the job goes to a task of its own
                    self._start([job])
                    raise

    def _current(self, job: Job) -> Any:
        return nullcontext() if self.spans is None else self.spans.current(job)
