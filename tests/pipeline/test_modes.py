"""Deferring modes end to end (leading edge, keep="first", collect), asserted on the times the
events carry."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from harness import LATE_MS, Pipeline
from pipeline_tasks import (
    D_MS,
    D,
    collected,
    collected_flaky,
    collected_in_threes,
    keep_first,
    leading_edge,
)
from test_pending_cancel import cli, pending

import cfstream as cf

pytestmark = pytest.mark.kafka

RESULT_TIMEOUT = 30


def submit_at(pipeline: Pipeline, at: float, task: cf.Task, *args: object) -> cf.Execution:
    """Submit once the monotonic clock reaches ``at`` (spacing calls, not waiting on them)."""
    time.sleep(max(0.0, at - time.monotonic()))
    return pipeline.submit(task, *args)


def times(pipeline: Pipeline, execution: cf.Execution) -> tuple[int, dict]:
    """(submitted_ms, started event) of an execution that ran."""
    scheduled = pipeline.events.one(execution.id, "scheduled")
    return scheduled["submitted_ms"], pipeline.events.one(execution.id, "started")


def test_leading_runs_the_first_call_at_once_and_the_rest_once_at_the_end(
        pipeline: Pipeline) -> None:
    key = uuid.uuid4().hex[:10]
    t0 = time.monotonic()
    first = pipeline.submit(leading_edge, key, 0)
    # Calls within the delay after it collapse into one trailing run, a delay after the last.
    rest = [submit_at(pipeline, t0 + at * D, leading_edge, key, n)
            for n, at in ((1, 0.3), (2, 0.6))]
    assert pipeline.result(first, RESULT_TIMEOUT) == 0
    submitted, started = times(pipeline, first)
    assert started["due_ms"] == submitted  # due at once, not after the delay
    assert submitted <= started["ts_ms"] <= submitted + LATE_MS
    assert pipeline.events.one(rest[1].id, "scheduled")["submitted_ms"] < submitted + D_MS

    assert [pipeline.result(c, RESULT_TIMEOUT) for c in rest] == [2, 2]
    assert pipeline.events.one(rest[0].id, "deferred")["successor"] == rest[1].id
    last, trailing = times(pipeline, rest[1])
    assert trailing["due_ms"] == last + D_MS
    assert last + D_MS <= trailing["ts_ms"] <= last + D_MS + LATE_MS
    assert not pipeline.events.of(rest[0].id, "started")

    # A delay after the trailing run was due, the key is quiet again: the next call runs at once.
    wait = (trailing["due_ms"] + D_MS) / 1000 - time.time()
    again = submit_at(pipeline, time.monotonic() + wait + 0.05, leading_edge, key, 3)
    assert pipeline.result(again, RESULT_TIMEOUT) == 3
    submitted, started = times(pipeline, again)
    assert submitted >= trailing["due_ms"] + D_MS
    assert started["due_ms"] == submitted
    assert submitted <= started["ts_ms"] <= submitted + LATE_MS


def test_keep_first_runs_the_first_calls_arguments_a_delay_after_the_last_call(
        pipeline: Pipeline) -> None:
    key = uuid.uuid4().hex[:10]
    t0 = time.monotonic()
    calls = [submit_at(pipeline, t0 + at * D, keep_first, key, n)
             for n, at in ((0, 0), (1, 0.3), (2, 0.6))]
    assert [pipeline.result(c, RESULT_TIMEOUT) for c in calls] == [0, 0, 0]
    for later in calls[1:]:
        deferred = pipeline.events.one(later.id, "deferred")
        assert (deferred["successor"], deferred["reason"]) == (calls[0].id, "kept_first")
    first, started = times(pipeline, calls[0])
    last = pipeline.events.one(calls[-1].id, "scheduled")["submitted_ms"]
    assert started["due_ms"] == last + D_MS  # pushed back by each newer call
    assert last + D_MS <= started["ts_ms"] <= last + D_MS + LATE_MS
    assert started["ts_ms"] - first >= 0.6 * D_MS + D_MS - 50
    assert [bool(pipeline.events.of(c.id, "started")) for c in calls] == [True, False, False]


def test_pending_shows_the_modes(pipeline: Pipeline) -> None:
    key = uuid.uuid4().hex[:10]
    waiting = pipeline.submit(keep_first.with_delay(60), key, 0)
    pipeline.events.one(waiting.id, "scheduled")
    listed = {item["id"]: item for item in pending(pipeline, "--task", keep_first.name)}
    assert listed[waiting.id]["keep"] == "first" and listed[waiting.id]["v"] == 2
    table = subprocess.run([sys.executable, "-m", "cfstream", "pending", "--task", keep_first.name],
                           capture_output=True, text=True, timeout=120,
                           env=pipeline.services.env(COLUMNS="200"))
    assert table.returncode == 0, table.stderr
    assert any(waiting.id in line and "keep=first" in line for line in table.stdout.splitlines())
    assert cli(pipeline, "cancel", waiting.id).returncode == 0
    with pytest.raises(cf.ExecutionCancelled):
        waiting.result(timeout=RESULT_TIMEOUT)


def test_collect_runs_once_with_every_calls_argument_in_order(pipeline: Pipeline) -> None:
    key = uuid.uuid4().hex[:10]
    t0 = time.monotonic()
    calls = [submit_at(pipeline, t0 + at * D, collected, {"key": key, "n": n})
             for n, at in enumerate((0, 0.2, 0.4, 0.6))]
    # Every waiter gets the one run's result: all four arguments, in the order of the calls.
    assert [pipeline.result(c, RESULT_TIMEOUT) for c in calls] == [[0, 1, 2, 3]] * 4
    for earlier, later in zip(calls, calls[1:], strict=False):
        deferred = pipeline.events.one(earlier.id, "deferred")
        assert (deferred["successor"], deferred["reason"]) == (later.id, "collected")
    last, started = times(pipeline, calls[-1])
    assert last + D_MS <= started["ts_ms"] <= last + D_MS + LATE_MS


def test_a_failed_collected_run_is_retried_with_its_list_alone(pipeline: Pipeline) -> None:
    key = uuid.uuid4().hex[:10]
    t0 = time.monotonic()
    calls = [submit_at(pipeline, t0 + at * D, collected_flaky, {"key": key, "n": n})
             for n, at in enumerate((0, 0.2, 0.4))]
    retrying = pipeline.events.one(calls[-1].id, "retrying", timeout=RESULT_TIMEOUT)
    # A call made while the retry waits opens a window of its own: the retry keeps its list.
    later = pipeline.submit(collected_flaky, {"key": key, "n": 3})
    assert [pipeline.result(c, RESULT_TIMEOUT) for c in calls] == [[0, 1, 2]] * 3
    assert pipeline.result(later, RESULT_TIMEOUT) == [3]  # its first attempt failed too
    retried = [e for e in pipeline.events.of(calls[-1].id, "started") if e.get("attempt") == 2]
    assert len(retried) == 1
    assert retrying["retry_at_ms"] == retrying["ts_ms"] + 1000
    assert retrying["retry_at_ms"] <= retried[0]["ts_ms"] <= retrying["retry_at_ms"] + LATE_MS


def test_collect_fires_a_full_window_at_once(pipeline: Pipeline) -> None:
    key = uuid.uuid4().hex[:10]
    calls = [pipeline.submit(collected_in_threes, {"key": key, "n": n}) for n in range(4)]
    # The delay is a minute, but three calls fill a window: it runs as soon as the third is in.
    assert [pipeline.result(c, RESULT_TIMEOUT) for c in calls[:3]] == [[0, 1, 2]] * 3
    third, started = times(pipeline, calls[2])
    assert started["due_ms"] == third
    assert third <= started["ts_ms"] <= third + LATE_MS
    listed = {item["id"]: item for item in pending(pipeline, "--task", collected_in_threes.name)}
    assert listed[calls[3].id]["collected"] == [{"key": key, "n": 3}]
    assert cli(pipeline, "cancel", calls[3].id).returncode == 0
    with pytest.raises(cf.ExecutionCancelled):
        calls[3].result(timeout=RESULT_TIMEOUT)
