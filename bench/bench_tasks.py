"""Tasks the benchmarks' worker runs: ``cfstream worker bench.bench_tasks``."""

from __future__ import annotations

import cfstream as cf


@cf.task()
def noop(i: int) -> int:
    """Does nothing: the end-to-end benchmark measures cfstream, not the task."""
    return i


@cf.task(delay=3600, defer=True)
def parked(i: int) -> int:
    """Never runs within a benchmark: the hour-long delay keeps its calls pending."""
    return i
