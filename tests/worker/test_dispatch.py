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


GATE = threading.Event()  # async_gate's job ends once it is set
PROBE_TURNS = [0]  # turns a probe coroutine on the loop had


async def async_gate(i: int) -> int:
    while not GATE.is_set():
        await asyncio.sleep(0.001)
    return i


async def async_instant(i: int) -> int:
    """Never waits."""
    return PROBE_TURNS[0]


async def async_cancels_itself(i: int) -> int:
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    await asyncio.sleep(0)
    return i


async def async_cancels_itself_and_returns(i: int) -> int:
    task = asyncio.current_task()
    assert task is not None
    task.cancel()  # pending: it would hit the task's next wait
    return i


async def async_waits_then_cancels_itself(i: int) -> int:
    await asyncio.sleep(0)
    return await async_cancels_itself_and_returns(i)


async def async_cancels_itself_and_carries_on(i: int) -> int:
    try:
        await async_cancels_itself(i)
    except asyncio.CancelledError:
        pass
    return i


async def async_cancelling(i: int) -> int:
    task = asyncio.current_task()
    assert task is not None
    return task.cancelling()


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
                             Task(fn=async_raises, name="tests:async_raises"),
                             Task(fn=async_gate, name="tests:async_gate"),
                             Task(fn=async_instant, name="tests:async_instant"),
                             Task(fn=async_cancels_itself, name="tests:async_cancels_itself"),
                             Task(fn=async_cancels_itself_and_returns,
                                  name="tests:async_cancels_itself_and_returns"),
                             Task(fn=async_waits_then_cancels_itself,
                                  name="tests:async_waits_then_cancels_itself"),
                             Task(fn=async_cancels_itself_and_carries_on,
                                  name="tests:async_cancels_itself_and_carries_on"),
                             Task(fn=async_cancelling, name="tests:async_cancelling"))}


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


def test_an_async_job_that_ends_runs_the_next_in_its_slot(
        dispatcher: Dispatcher, monkeypatch: pytest.MonkeyPatch) -> None:
    """Twelve async jobs in three slots: three asyncio tasks, each begun through the loop's
    wake-up pipe from the submitting thread, run them all; no job that ends wakes the loop or
    makes a task for the next."""
    begun: list[str] = []  # the threads that asked the loop to begin a task
    wake = dispatcher._loop.call_soon_threadsafe

    def waking(callback: Any, *args: Any, **options: Any) -> Any:
        if callback == dispatcher._begin_async:
            begun.append(threading.current_thread().name)
        return wake(callback, *args, **options)

    monkeypatch.setattr(dispatcher._loop, "call_soon_threadsafe", waking)
    tasks: list[Any] = []
    create = dispatcher._loop.create_task

    def creating(coro: Any, **options: Any) -> Any:
        tasks.append(coro)
        return create(coro, **options)

    monkeypatch.setattr(dispatcher._loop, "create_task", creating)
    GATE.clear()
    jobs = [job("tests:async_gate", i) for i in range(CONCURRENCY)]  # hold the slots
    jobs += [job("tests:async_body", i) for i in range(CONCURRENCY, 12)]  # wait for one
    for j in jobs:
        dispatcher.submit(j)
    GATE.set()
    got = outcomes(dispatcher, len(jobs))
    assert sorted(j.offset for j, _ in got) == list(range(12))
    assert begun == [threading.current_thread().name] * CONCURRENCY
    assert len(tasks) == CONCURRENCY


def test_async_jobs_that_never_wait_leave_the_loop_its_turns() -> None:
    """200 async jobs that never wait, queued for one slot: a probe coroutine on the loop runs
    between nearly every two of them (run back to back in one step, it would not run at all)."""
    d = Dispatcher(TASKS, 1)
    d.open()
    stop = threading.Event()

    async def probe() -> None:
        while not stop.is_set():
            PROBE_TURNS[0] += 1
            await asyncio.sleep(0)

    try:
        GATE.clear()
        asyncio.run_coroutine_threadsafe(probe(), d._loop)
        d.submit(job("tests:async_gate", 0))  # holds the slot while the rest queue
        for i in range(1, 201):
            d.submit(job("tests:async_instant", i))
        GATE.set()
        got = outcomes(d, 201)
    finally:
        stop.set()
        d.close()
    seen = [o.fields["result"] for j, o in got if j.offset > 0]
    assert len(seen) == 200
    assert len(set(seen)) > 190


@pytest.mark.parametrize("cancels, ends", [
    ("async_cancels_itself", "failed"),
    ("async_cancels_itself_and_returns", "succeeded"),
    ("async_waits_then_cancels_itself", "succeeded"),
    ("async_cancels_itself_and_carries_on", "succeeded"),
])
def test_an_async_job_that_cancels_its_task_leaves_no_cancellation_to_the_next(
        cancels: str, ends: str) -> None:
    """A job that cancels its own asyncio task, whether the cancellation ends it, is still
    pending when it returns, or is caught: the next job in its slot runs in a task that nobody
    cancelled, and every job is reported."""
    d = Dispatcher(TASKS, 1)
    d.open()
    try:
        GATE.clear()
        d.submit(job("tests:async_gate", 0))  # holds the slot while the rest queue
        d.submit(job(f"tests:{cancels}", 1))
        d.submit(job("tests:async_cancelling", 2))
        d.submit(job("tests:async_body", 3))
        GATE.set()
        got = {j.offset: o for j, o in outcomes(d, 4)}
    finally:
        d.close()
    assert sorted(got) == [0, 1, 2, 3]
    assert got[1].type == ends
    if ends == "failed":
        assert got[1].fields["error"]["type"] == "asyncio.exceptions.CancelledError"
    assert (got[2].type, got[2].fields["result"]) == ("succeeded", 0)
    assert (got[3].type, got[3].fields["result"]) == ("succeeded", -3)
    assert not d.running


def test_a_long_run_of_async_jobs_that_cannot_begin_fails_each() -> None:
    """5,000 async jobs whose arguments do not fit, queued for one slot: each fails without
    running, and is reported."""
    d = Dispatcher(TASKS, 1)
    d.open()
    try:
        jobs = [Job(FiredCall(Call(id=f"unfit-{i}", task="tests:async_body", args=[], kwargs={},
                                   submitted_ms=NOW), NOW, NOW), 0, i)
                for i in range(5_000)]  # async_body takes one argument
        d.submit(job("tests:async_body", 5_000))  # holds the slot while the rest queue
        for j in jobs:
            d.submit(j)
        got = outcomes(d, len(jobs) + 1)
    finally:
        d.close()
    errors = [o.fields["error"]["type"] for j, o in got if j.offset < 5_000]
    assert errors == ["InvalidArguments"] * 5_000
    assert [o.fields["result"] for j, o in got if j.offset == 5_000] == [-5_000]


def test_what_waits_for_a_slot_is_dropped_on_close() -> None:
    d = Dispatcher(TASKS, 1)
    d.open()
    for i in range(5):
        d.submit(job("tests:sync_body", i))
    d.close()
    time.sleep(0.5)  # 25 times a body's 20 ms: all five would have ended
    assert len(d.outcomes()) <= 1  # the one running may end; the others never start
