"""Deferring without a delay: same-key calls queued behind a busy worker merge into the latest."""

from __future__ import annotations

import uuid

import pytest
from conftest import PipelineFactory
from pipeline_tasks import latest, slow

pytestmark = pytest.mark.kafka


def test_queued_calls_with_one_key_run_once_with_the_latest_arguments(
        pipeline_factory: PipelineFactory) -> None:
    pipeline = pipeline_factory(concurrency=1)
    blocker = pipeline.submit(slow, 3.0)
    pipeline.events.one(blocker.id, "started")
    key = uuid.uuid4().hex
    calls = [pipeline.submit(latest, key, n) for n in range(5)]
    other = pipeline.submit(latest, uuid.uuid4().hex, 99)

    assert [pipeline.result(c, timeout=60) for c in calls] == [4] * 5
    assert other.result(timeout=60) == 99  # another key is not merged away

    survivor = calls[-1]
    blocker_done = pipeline.events.one(blocker.id, "succeeded")
    survivor_start = pipeline.events.one(survivor.id, "started")
    assert survivor_start["ts_ms"] >= blocker_done["ts_ms"]  # it waited in the backlog
    pipeline.events.one(survivor.id, "succeeded")
    for call in calls[:-1]:
        deferred = pipeline.events.one(call.id, "deferred")
        assert deferred["reason"] == "backlog"
        assert not pipeline.events.of(call.id, "started")
    assert pipeline.events.one(other.id, "started")


def test_a_running_execution_is_never_replaced(pipeline_factory: PipelineFactory) -> None:
    pipeline = pipeline_factory(concurrency=1)
    key = uuid.uuid4().hex
    blocker = pipeline.submit(slow, 2.0)
    pipeline.events.one(blocker.id, "started")
    first = pipeline.submit(latest, key, 1)
    # Let the first call start (it is next in the backlog once the blocker ends) before the
    # second arrives: the second must then run as well, after it.
    pipeline.events.one(first.id, "started", timeout=60)
    second = pipeline.submit(latest, key, 2)
    assert first.result(timeout=60) == 1
    assert second.result(timeout=60) == 2
