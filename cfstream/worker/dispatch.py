"""Running tasks off the worker's thread.

Sync tasks run in a pool of ``concurrency`` threads, async ones on an event loop in a thread of
its own. Either way the outcome comes back through a queue that the worker's thread reads, so
all Kafka work stays on that one thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any

from cfstream.task import Task
from cfstream.worker import execute
from cfstream.worker.jobs import Job

Finished = tuple[Job, execute.Outcome]


class Dispatcher:
    def __init__(self, tasks: dict[str, Task[Any, Any]], concurrency: int) -> None:
        self.tasks = tasks
        self.concurrency = concurrency
        self.running: dict[str, Job] = {}  # id -> job, from start to its outcome being taken
        self._outcomes: queue.Queue[Finished] = queue.Queue()
        self._pool = concurrent.futures.ThreadPoolExecutor(concurrency,
                                                           thread_name_prefix="cfstream-task")
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever,
                                             name="cfstream-async", daemon=True)

    def open(self) -> None:
        self._loop_thread.start()

    def free(self) -> int:
        return self.concurrency - len(self.running)

    def has_outcomes(self) -> bool:
        return not self._outcomes.empty()

    def start(self, job: Job) -> None:
        """Run ``job``'s task; its outcome is then among :meth:`outcomes`."""
        self.running[job.id] = job
        target, ready = execute.prepare(self.tasks.get(job.call.task), job.call)
        if ready is not None:
            self._outcomes.put((job, ready))
        elif asyncio.iscoroutine(target):
            future = asyncio.run_coroutine_threadsafe(target, self._loop)
            future.add_done_callback(self._collect(job))
        else:
            self._pool.submit(target).add_done_callback(self._collect(job))

    def outcomes(self, wait: float = 0.0) -> list[Finished]:
        """The outcomes that came in (waiting up to ``wait`` seconds for the first); their jobs
        no longer count as running."""
        try:
            first = self._outcomes.get(timeout=wait) if wait > 0 else self._outcomes.get_nowait()
        except queue.Empty:
            return []
        finished = [first]
        while True:
            try:
                finished.append(self._outcomes.get_nowait())
            except queue.Empty:
                break
        for job, _ in finished:
            self.running.pop(job.id, None)
        return finished

    def close(self) -> None:
        """Stop taking tasks; those still running are abandoned (they run again elsewhere)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._loop_thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)

    def _collect(self, job: Job) -> Callable[[concurrent.futures.Future[Any]], None]:
        def done(future: concurrent.futures.Future[Any]) -> None:
            if future.cancelled():
                return
            error = future.exception()
            if error is not None:
                outcome = execute.from_exception(error)
            else:
                outcome = execute.success(future.result(), job.call.task)
            self._outcomes.put((job, outcome))
        return done
