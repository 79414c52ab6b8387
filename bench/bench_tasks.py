"""Tasks the benchmarks' worker runs: ``cfstream worker bench.bench_tasks``."""

from __future__ import annotations

import asyncio
import time

import cfstream as cf


@cf.task()
def noop(i: int) -> int:
    """Does nothing: the end-to-end benchmark measures cfstream, not the task."""
    return i


@cf.task(delay=3600, defer=True)
def parked(i: int) -> int:
    """Never runs within a benchmark: the hour-long delay keeps its calls pending."""
    return i


@cf.task()
def sleep_1ms(i: int) -> int:
    """Sleeps 1 ms: concurrency, not the worker, should decide how many run a second."""
    time.sleep(0.001)
    return i


@cf.task()
async def async_sleep_1ms(i: int) -> int:
    """Awaits a 1 ms sleep on the worker's event loop."""
    await asyncio.sleep(0.001)
    return i
