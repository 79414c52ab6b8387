"""Helpers of the events tests: ids placed on a partition, a call in a thread, a condition
polled with a deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from cfstream.ids import new_execution_id
from cfstream.kafka.partitioner import partition_for

# Partitions of the events tests' topics: enough to show a reader keeps to one.
PARTITIONS = 4

Append = Callable[..., None]


def ids_in(partition: int, count: int) -> list[str]:
    found: list[str] = []
    while len(found) < count:
        candidate = new_execution_id()
        if partition_for(candidate.encode(), PARTITIONS) == partition:
            found.append(candidate)
    return found


def in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    box: list[object] = []
    thread = threading.Thread(target=lambda: box.append(call()), daemon=True)
    thread.start()
    return thread, box


def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
