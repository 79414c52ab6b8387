"""Running tasks off the worker's thread (cfstream.worker.dispatch): one bound on sync and async
executions together, and outcomes of either kind."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cfstream.execution import current_execution
from cfstream.task import Task
from cfstream.wire import Call, FiredCall
from cfstream.worker.dispatch import Dispatcher, Finished
from cfstream.worker.jobs import Job

NOW = 1_800_000_000_000
CONCURRENCY = 3


class Gauge:
    """How many task bodies run at once, and the most there ever were."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.most = 0

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


GAUGE = Gauge()


def sync_body(i: int) -> int:
    GAUGE.enter()
    time.sleep(0.02)
    GAUGE.leave()
    return i


ASYNC_THREADS: set[str] = set()


async def async_body(i: int) -> int:
    ASYNC_THREADS.add(threading.current_thread().name)  # holding no task thread
    GAUGE.enter()
    await asyncio.sleep(0.02)
    GAUGE.leave()
    return -i


async def async_raises(i: int) -> int:
    raise KeyError(i)


def whoami() -> str | None:
    execution = current_execution()
    return execution.id if execution else None


async def async_whoami() -> str | None:
    await asyncio.sleep(0.01)
    return whoami()


TASKS = {t.name: t for t in (Task(fn=sync_body, name="tests:sync_body"),
                             Task(fn=whoami, name="tests:whoami"),
                             Task(fn=async_whoami, name="tests:async_whoami"),
                             Task(fn=async_body, name="tests:async_body"),
                             Task(fn=async_raises, name="tests:async_raises"))}


def job(task: str, i: int) -> Job:
    args = [] if task.endswith("whoami") else [i]
    call = Call(id=f"{task}-{i}", task=task, args=args, kwargs={}, submitted_ms=NOW)
    return Job(FiredCall(call, NOW, NOW), 0, i)


@pytest.fixture
def dispatcher() -> Iterator[Dispatcher]:
    GAUGE.now = GAUGE.most = 0
    ASYNC_THREADS.clear()
    d = Dispatcher(TASKS, CONCURRENCY)
    d.open()
    yield d
    d.close()


def outcomes(d: Dispatcher, count: int, timeout: float = 10.0) -> list[Finished]:
    got: list[Finished] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += d.outcomes(wait=0.1)
    return got


def test_concurrency_bounds_sync_and_async_runs_together(dispatcher: Dispatcher) -> None:
    jobs = [job("tests:sync_body" if i % 2 else "tests:async_body", i) for i in range(30)]
    for j in jobs:
        dispatcher.submit(j)
    got = outcomes(dispatcher, len(jobs))
    assert len(got) == len(jobs) and not dispatcher.running
    assert 1 < GAUGE.most <= CONCURRENCY
    assert ASYNC_THREADS == {"cfstream-async"}
    results: dict[str, Any] = {j.id: o.fields["result"] for j, o in got}
    assert results == {j.id: (j.offset if j.offset % 2 else -j.offset) for j in jobs}


def test_each_run_sees_its_own_execution(dispatcher: Dispatcher) -> None:
    jobs = [job("tests:whoami", i) for i in range(3)] + [job("tests:async_whoami", i)
                                                         for i in range(3)]
    for j in jobs:
        dispatcher.submit(j)
    got = {j.id: o.fields["result"] for j, o in outcomes(dispatcher, len(jobs))}
    assert got == {j.id: j.id for j in jobs}


def test_an_async_tasks_exception_and_an_unknown_task_are_failed_outcomes(
        dispatcher: Dispatcher) -> None:
    dispatcher.submit(job("tests:async_raises", 7))
    dispatcher.submit(job("tests:nobody", 8))
    got = {j.id: o for j, o in outcomes(dispatcher, 2)}
    assert got["tests:async_raises-7"].type == "failed"
    assert got["tests:async_raises-7"].fields["error"]["type"] == "KeyError"
    assert got["tests:nobody-8"].fields["error"]["type"] == "TaskNotRegistered"


def test_an_async_job_that_ends_starts_the_next_without_waking_the_loop(
        dispatcher: Dispatcher, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the jobs begun from another thread go through the loop's wake-up pipe."""
    woken: list[str] = []  # threads that began a job waking the loop
    soon: list[str] = []  # threads that began one without waking it
    loop = dispatcher._loop
    wake, queue = loop.call_soon_threadsafe, loop.call_soon

    def waking(callback: Any, *args: Any, **options: Any) -> Any:
        if callback == dispatcher._begin_async:
            woken.append(threading.current_thread().name)
        return wake(callback, *args, **options)

    def queuing(callback: Any, *args: Any, **options: Any) -> Any:
        if callback == dispatcher._begin_async:
            soon.append(threading.current_thread().name)
        return queue(callback, *args, **options)

    monkeypatch.setattr(loop, "call_soon_threadsafe", waking)
    monkeypatch.setattr(loop, "call_soon", queuing)
    jobs = [job("tests:async_body", i) for i in range(12)]
    for j in jobs:
        dispatcher.submit(j)
    got = outcomes(dispatcher, len(jobs))
    assert sorted(j.offset for j, _ in got) == list(range(12))
    assert woken and "cfstream-async" not in woken
    assert "cfstream-async" in soon  # a job that ended began the next


def test_what_waits_for_a_slot_is_dropped_on_close() -> None:
    d = Dispatcher(TASKS, 1)
    d.open()
    for i in range(5):
        d.submit(job("tests:sync_body", i))
    d.close()
    time.sleep(0.5)  # 25 times a body's 20 ms: all five would have ended
    assert len(d.outcomes()) <= 1  # the one running may end; the others never start
