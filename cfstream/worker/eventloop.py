"""The event loop that async tasks run on: one that wakes when its next timer is due.

asyncio waits for its next timer in ``epoll_wait``, whose timeout is in whole milliseconds,
rounded up: a task that awaits ``asyncio.sleep(0.001)`` 0.2 ms before another task's timer is
due wakes with that timer, then waits a full millisecond more for its own. And Linux lets a
thread's timed waits end late by its timer slack (50 us by default), to merge wake-ups. So the
worker's loop waits for its timers in ``select()``, whose timeout is in microseconds, on the
epoll descriptor itself (readable once a watched descriptor is), and its thread runs with the
least timer slack. Measured with 1 ms async tasks at concurrency 8 (bench/worker, three
alternating rounds each, slots that run their next job themselves, see
:mod:`cfstream.worker.dispatch`): 5,919/s on asyncio's own loop, 6,403/s with the select()
wait, 6,547/s with the least slack besides.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import select
import selectors
import sys
import warnings

logger = logging.getLogger(__name__)

# prctl's option that sets the calling thread's timer slack, in nanoseconds (linux/prctl.h).
PR_SET_TIMERSLACK = 29
LEAST_SLACK_NS = 1  # 0 would restore the default


def new_loop() -> asyncio.AbstractEventLoop:
    """A loop for the worker's async tasks; call :func:`sharpen_timers` on its thread. Where
    the process has an event loop policy of its own (uvloop's, say), the loop is that policy's."""
    if not hasattr(selectors, "EpollSelector") or _own_policy():  # (no epoll: not Linux)
        return asyncio.new_event_loop()
    return asyncio.SelectorEventLoop(TimelySelector())


def _own_policy() -> bool:
    """Whether the process set an event loop policy (deprecated in Python 3.14, gone in 3.16)."""
    if sys.version_info >= (3, 16):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return type(asyncio.get_event_loop_policy()) is not asyncio.DefaultEventLoopPolicy


def sharpen_timers() -> bool:
    """Let the calling thread's timed waits end on time (Linux); whether they now do."""
    if sys.platform != "linux":
        return False
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # no C library to load, or no prctl in it
        return False
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                      ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    if prctl(PR_SET_TIMERSLACK, LEAST_SLACK_NS, 0, 0, 0) != 0:
        logger.debug("timer slack left as it is: prctl failed (errno %d)", ctypes.get_errno())
        return False
    return True


if hasattr(selectors, "EpollSelector"):

    class TimelySelector(selectors.EpollSelector):
        """epoll, but a wait with a timeout ends when the timeout does, not at the next whole
        millisecond."""

        def __init__(self) -> None:
            super().__init__()
            self.limited = False  # its descriptor is past select()'s limit (1024)

        def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
            if timeout is not None and timeout > 0 and not self.limited:
                try:
                    select.select([self.fileno()], [], [], timeout)
                except ValueError:
                    self.limited = True
                    logger.info("the event loop's descriptor is past select()'s limit: its "
                                "timers wake to the next millisecond")
                    return super().select(timeout)
                timeout = 0
            return super().select(timeout)
