"""The worker tests' fixture: a worker on in-memory stand-ins (tests/worker/worker_harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from worker_harness import Harness

from cfstream.task import Task


@pytest.fixture
def harness_of() -> Iterator[Any]:
    """``harness_of(tasks, **options)``: a worker with stand-ins, closed at the end."""
    made: list[Harness] = []

    def make(tasks: list[Task[Any, Any]], **options: Any) -> Harness:
        harness = Harness(tasks, **options)
        harness.worker.open()
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.worker.dispatcher.close()
