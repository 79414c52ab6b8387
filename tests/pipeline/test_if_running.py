"""``if_running="after"`` end to end: calls made while a key's execution runs wait for it to end
and collapse into one run, asserted on the times the events carry; a run cut short by a lost
worker releases its key too. The default runs them side by side."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid

import pytest
from harness import LATE_MS, Pipeline, PipelineFactory
from pipeline_tasks import D_MS, one_at_a_time, side_by_side
from test_modes import submit_at
from test_pending_cancel import pending

import cfstream as cf

pytestmark = pytest.mark.kafka

RESULT_TIMEOUT = 60
# The running call's length: long enough that the calls made after it started are due (a
# delay after they were made) well before it ends, even when its started event is read late.
RUN_S = 6.0


def test_calls_made_while_a_key_runs_wait_for_it_and_collapse_into_one_run(
        pipeline: Pipeline) -> None:
    key = uuid.uuid4().hex[:10]
    running = pipeline.submit(one_at_a_time, key, 0, RUN_S)
    pipeline.events.one(running.id, "started", timeout=RESULT_TIMEOUT)
    t0 = time.monotonic()
    held = [submit_at(pipeline, t0 + at, one_at_a_time, key, n, 0)
            for n, at in ((1, 0), (2, 0.3))]

    scheduled = pipeline.events.one(held[1].id, "scheduled")
    assert scheduled["after"] == running.id
    listed = {item["id"]: item for item in pending(pipeline, "--task", one_at_a_time.name)}
    assert listed[held[1].id]["after"] == running.id
    table = subprocess.run([sys.executable, "-m", "cfstream", "pending", "--task",
                            one_at_a_time.name], capture_output=True, text=True, timeout=120,
                           env=pipeline.services.env(COLUMNS="200"))
    assert any(held[1].id in line and f"after {running.id[:8]}" in line
               for line in table.stdout.splitlines()), table.stdout

    assert pipeline.result(running, RESULT_TIMEOUT) == 0
    assert [pipeline.result(c, RESULT_TIMEOUT) for c in held] == [2, 2]
    assert pipeline.events.one(held[0].id, "deferred")["successor"] == held[1].id
    assert not pipeline.events.of(held[0].id, "started")

    ended = pipeline.events.one(running.id, "succeeded")["ts_ms"]
    assert scheduled["due_ms"] == scheduled["submitted_ms"] + D_MS
    assert scheduled["due_ms"] < ended  # its quiet period was over while the first one ran
    started = pipeline.events.one(held[1].id, "started")
    # It was held: due, and run, only once the running one had ended.
    assert ended <= started["due_ms"] <= ended + LATE_MS
    assert ended <= started["ts_ms"] <= ended + LATE_MS


def test_by_default_a_call_runs_at_its_due_time_beside_the_running_one(
        pipeline: Pipeline) -> None:
    key = uuid.uuid4().hex[:10]
    running = pipeline.submit(side_by_side, key, 0, RUN_S)
    pipeline.events.one(running.id, "started", timeout=RESULT_TIMEOUT)
    beside = pipeline.submit(side_by_side, key, 1, 0)
    assert pipeline.result(beside, RESULT_TIMEOUT) == 1
    assert "after" not in pipeline.events.one(beside.id, "scheduled")
    started = pipeline.events.one(beside.id, "started")
    assert started["ts_ms"] <= started["due_ms"] + LATE_MS
    assert pipeline.result(running, RESULT_TIMEOUT) == 0
    assert started["ts_ms"] < pipeline.events.one(running.id, "succeeded")["ts_ms"]


def test_a_run_cut_short_by_a_lost_worker_releases_its_key(
        pipeline_factory: PipelineFactory) -> None:
    pipeline = pipeline_factory()  # of its own: its worker is killed
    key = uuid.uuid4().hex[:10]
    running = pipeline.submit(one_at_a_time, key, 0, 600)
    pipeline.events.one(running.id, "started", timeout=RESULT_TIMEOUT)
    pipeline.services.stop("worker-0", sig=signal.SIGKILL)
    held = pipeline.submit(one_at_a_time, key, 1, 0)
    assert pipeline.events.one(held.id, "scheduled")["after"] == running.id
    pipeline.services.worker("worker-1")

    # The next worker finds the execution begun and never reported: lost (the task does not
    # retry), which ends the run; then the held call runs.
    with pytest.raises(cf.ExecutionFailed, match="WorkerLost"):
        pipeline.result(running, 120)
    assert pipeline.result(held, 120) == 1
    lost = pipeline.events.one(running.id, "failed")
    started = pipeline.events.one(held.id, "started")
    assert lost["ts_ms"] <= started["ts_ms"] <= lost["ts_ms"] + LATE_MS
