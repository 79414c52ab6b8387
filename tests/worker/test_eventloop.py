"""The worker's event loop wakes when a timer is due (cfstream.worker.eventloop)."""

from __future__ import annotations

import asyncio
import selectors
import socket
import statistics
import sys
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
    not. (Medians of 30 sleeps, one loop after the other, so a busy machine slows both.)"""
    stock = statistics.median(sleeps(asyncio.SelectorEventLoop(), 0.0002, 30))
    timely = statistics.median(sleeps(eventloop.new_loop(), 0.0002, 30))
    assert stock >= 0.001
    assert timely < stock - 0.0005


@pytest.mark.skipif(sys.version_info >= (3, 16), reason="loop policies: gone in 3.16")
def test_a_loop_policy_of_the_process_is_kept() -> None:
    """With an event loop policy other than asyncio's (uvloop's, say), the loop is that
    policy's."""
    made: list[asyncio.AbstractEventLoop] = []

    class Policy(asyncio.DefaultEventLoopPolicy):
        def new_event_loop(self) -> asyncio.AbstractEventLoop:
            made.append(super().new_event_loop())
            return made[-1]

    asyncio.set_event_loop_policy(Policy())
    try:
        loop = eventloop.new_loop()
        loop.close()
    finally:
        asyncio.set_event_loop_policy(None)  # asyncio's own again
    assert made == [loop]


def test_a_descriptor_that_becomes_ready_ends_a_timed_wait() -> None:
    selector = eventloop.TimelySelector()
    ours, theirs = socket.socketpair()
    try:
        selector.register(ours, selectors.EVENT_READ, "data")
        sender = threading.Timer(0.05, theirs.send, (b"x",))
        sender.start()
        began = time.monotonic()
        ready = selector.select(5.0)
        sender.join()
        assert time.monotonic() - began < 1.0
        assert [(key.data, events) for key, events in ready] == [("data", selectors.EVENT_READ)]
    finally:
        selector.close()
        ours.close()
        theirs.close()


def test_past_selects_limit_it_waits_in_epoll(monkeypatch: pytest.MonkeyPatch) -> None:
    """select() takes descriptors below 1024 only: past that, the wait is epoll's own."""
    refused: list[object] = []

    def refuse(*args: object) -> None:
        refused.append(args)
        raise ValueError("filedescriptor out of range in select()")

    monkeypatch.setattr(eventloop.select, "select", refuse)
    selector = eventloop.TimelySelector()
    try:
        for _ in range(3):
            began = time.monotonic()
            assert selector.select(0.01) == []
            assert time.monotonic() - began >= 0.01
    finally:
        selector.close()
    assert len(refused) == 1  # not asked again


def test_timers_are_sharpened_on_the_calling_thread() -> None:
    """prctl's timer slack is per thread: read back with PR_GET_TIMERSLACK (30)."""
    import ctypes

    libc = ctypes.CDLL(None)
    got: list[int] = []
    sharpened: list[bool] = []

    def sharpen_and_read() -> None:
        got.append(libc.prctl(30, 0, 0, 0, 0))
        sharpened.append(eventloop.sharpen_timers())
        got.append(libc.prctl(30, 0, 0, 0, 0))

    thread = threading.Thread(target=sharpen_and_read)
    thread.start()
    thread.join()
    assert sharpened == [True]
    assert got[0] > eventloop.LEAST_SLACK_NS
    assert got[1] == eventloop.LEAST_SLACK_NS
    assert libc.prctl(30, 0, 0, 0, 0) == got[0]  # this thread's is untouched
