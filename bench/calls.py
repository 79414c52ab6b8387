"""Building and publishing calls the way ``Client.submit`` does, with chosen keys and delays."""

from __future__ import annotations

import time
from collections.abc import Iterable

from bench.env import Progress
from cfstream.client import Client
from cfstream.ids import new_execution_id
from cfstream.wire import Call

NOOP = "bench.bench_tasks:noop"
PARKED = "bench.bench_tasks:parked"
HOUR_MS = 3_600_000


def call(i: int, *, task: str = PARKED, defer_key: str | None = None, delay_ms: int = HOUR_MS,
         now: int | None = None) -> Call:
    now = int(time.time() * 1000) if now is None else now
    return Call(id=new_execution_id(now), task=task, args=[i], kwargs={}, submitted_ms=now,
                delay_ms=delay_ms, defer_key=defer_key)


def publish(client: Client, calls: Iterable[Call], progress: Progress | None = None) -> int:
    """Publish and flush; returns the count. Raises if any stayed queued."""
    count = 0
    for c in calls:
        client.publish(c)
        count += 1
        if progress is not None and count % 1000 == 0:
            progress(count)
    if progress is not None:
        progress(count)
        progress.finish()
    left = client.flush(60)
    if left:
        raise RuntimeError(f"{left} calls still queued after 60 s")
    return count


def colliding(n: int, task: str = PARKED, delay_ms: int = HOUR_MS) -> Iterable[Call]:
    """``n`` calls over ``n // 2`` defer keys: every key is called twice, so half the calls
    replace a pending one (the second round of keys comes after the first)."""
    keys = max(1, n // 2)
    for i in range(n):
        yield call(i, task=task, defer_key=f"k{i % keys}", delay_ms=delay_ms)


def distinct(start: int, stop: int, task: str = PARKED,
             delay_ms: int = HOUR_MS) -> Iterable[Call]:
    for i in range(start, stop):
        yield call(i, task=task, defer_key=f"k{i}", delay_ms=delay_ms)
