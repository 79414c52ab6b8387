"""The worker's event loop wakes when a timer is due (cfstream.worker.eventloop)."""

from __future__ import annotations

import asyncio
import selectors
import socket
import statistics
import threading
import time

import pytest

from cfstream.worker import eventloop

pytestmark = pytest.mark.skipif(not hasattr(selectors, "EpollSelector"), reason="epoll: Linux")


def sleeps(loop: asyncio.AbstractEventLoop, seconds: float, times: int) -> list[float]:
    """How long each of ``times`` sleeps of ``seconds`` took on ``loop``."""
    async def measure() -> list[float]:
        took = []
        for _ in range(times):
            began = time.perf_counter()
            await asyncio.sleep(seconds)
            took.append(time.perf_counter() - began)
        return took

    try:
        return loop.run_until_complete(measure())
    finally:
        loop.close()


def test_a_sleep_under_a_millisecond_ends_on_time() -> None:
    """asyncio's own loop rounds a 0.2 ms wait up to 1 ms (epoll's unit); the worker's does
    not."""
    assert statistics.median(sleeps(asyncio.SelectorEventLoop(), 0.0002, 30)) >= 0.001
    assert statistics.median(sleeps(eventloop.new_loop(), 0.0002, 30)) < 0.0008


def test_a_descriptor_that_becomes_ready_ends_a_timed_wait() -> None:
    selector = eventloop.TimelySelector()
    ours, theirs = socket.socketpair()
    try:
        selector.register(ours, selectors.EVENT_READ, "data")
        threading.Timer(0.05, theirs.send, (b"x",)).start()
        began = time.monotonic()
        ready = selector.select(5.0)
        assert time.monotonic() - began < 1.0
        assert [(key.data, events) for key, events in ready] == [("data", selectors.EVENT_READ)]
    finally:
        selector.close()
        ours.close()
        theirs.close()


def test_past_selects_limit_it_waits_in_epoll(monkeypatch: pytest.MonkeyPatch) -> None:
    """select() takes descriptors below 1024 only: past that, the wait is epoll's own."""
    def refuse(*args: object) -> None:
        raise ValueError("filedescriptor out of range in select()")

    monkeypatch.setattr(eventloop.select, "select", refuse)
    selector = eventloop.TimelySelector()
    try:
        began = time.monotonic()
        assert selector.select(0.01) == []
        assert time.monotonic() - began >= 0.01
    finally:
        selector.close()


def test_timers_are_sharpened_on_the_calling_thread() -> None:
    """prctl's timer slack is per thread: read back with PR_GET_TIMERSLACK (30)."""
    import ctypes

    libc = ctypes.CDLL(None)
    got: list[int] = []

    def sharpen_and_read() -> None:
        got.append(libc.prctl(30, 0, 0, 0, 0))
        eventloop.sharpen_timers()
        got.append(libc.prctl(30, 0, 0, 0, 0))

    thread = threading.Thread(target=sharpen_and_read)
    thread.start()
    thread.join()
    assert got[0] > eventloop.LEAST_SLACK_NS
    assert got[1] == eventloop.LEAST_SLACK_NS
    assert libc.prctl(30, 0, 0, 0, 0) == got[0]  # this thread's is untouched
