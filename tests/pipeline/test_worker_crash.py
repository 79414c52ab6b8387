"""A worker killed mid-run or before committing: nothing runs twice, nothing waits forever."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from harness import Pipeline, PipelineFactory
from pipeline_tasks import recorded

import cfstream as cf

pytestmark = pytest.mark.kafka


def runs(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def with_worker_a(pipeline_factory: PipelineFactory, log: Path, **worker: Any) -> Pipeline:
    """A processor and worker-a, which notes each run in ``log``, both ready."""
    pipeline = pipeline_factory(workers=0, start=False)
    pipeline.services.processor("processor-0")
    pipeline.services.worker("worker-a", RUN_LOG=str(log), **worker)
    pipeline.wait_ready()
    return pipeline


def test_a_run_cut_short_by_a_crash_is_reported_not_repeated(
        pipeline_factory: PipelineFactory, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    pipeline = with_worker_a(pipeline_factory, log)

    quick = [pipeline.submit(recorded, 0) for _ in range(5)]
    for execution in quick:
        assert execution.result(timeout=60) == 0
    cut_short = pipeline.submit(recorded, 30)
    pipeline.events.one(cut_short.id, "started")
    pipeline.services.stop("worker-a", sig=signal.SIGKILL)  # quick ones may be uncommitted too
    pipeline.services.worker("worker-b", RUN_LOG=str(log))

    with pytest.raises(cf.ExecutionFailed) as info:
        cut_short.result(timeout=90)
    assert info.value.error_type == "WorkerLost"
    after = pipeline.submit(recorded, 0)
    assert after.result(timeout=60) == 0
    ran = runs(log)
    assert sorted(ran) == sorted({*(e.id for e in quick), cut_short.id, after.id})


def test_executions_queued_behind_a_run_are_run_by_the_next_worker(
        pipeline_factory: PipelineFactory, tmp_path: Path) -> None:
    """A worker starts no more executions than it has threads: those it fetched but had no
    thread for were never ``started``, so the next worker runs them (no retries needed). Every
    ``started`` it wrote is of a body that began (the run log has it)."""
    log = tmp_path / "runs.log"
    pipeline = with_worker_a(pipeline_factory, log, concurrency=1)

    running = pipeline.submit(recorded, 60)
    pipeline.events.one(running.id, "started")
    queued = [pipeline.submit(recorded, 0) for _ in range(6)]
    for execution in queued:  # fired to the worker, which has no free thread for them
        pipeline.events.one(execution.id, "scheduled")
    pipeline.services.stop("worker-a", sig=signal.SIGKILL)
    pipeline.services.worker("worker-b", RUN_LOG=str(log))

    with pytest.raises(cf.ExecutionFailed) as info:
        running.result(timeout=90)
    assert info.value.error_type == "WorkerLost"
    assert [e.result(timeout=90) for e in queued] == [0] * 6
    ran = runs(log)
    ids = [running.id, *(e.id for e in queued)]
    assert sorted(ran) == sorted(ids)  # each body once
    # started means the body began: one started event per run, none for a body that did not
    # (read once each outcome is: an id's events are on one partition, in order).
    pipeline.events.one(running.id, "failed")
    for execution in queued:
        pipeline.events.one(execution.id, "succeeded")
    assert [len(pipeline.events.of(i, "started")) for i in ids] == [ran.count(i) for i in ids]
    assert all(not pipeline.events.of(e.id, "failed") for e in queued)


def test_slow_tasks_that_end_together_are_not_announced_ahead(
        pipeline_factory: PipelineFactory, tmp_path: Path) -> None:
    """Eight 2 s tasks end in waves; a wave is not a burst of 40 a second, so nothing is
    announced beyond the threads (docs/operations.md: none when fewer than one ends within
    the round trips ahead; at 8 a 2 s run, while a round trip stays under 31 ms). Killed
    mid-wave, the worker leaves only the bodies that began reported lost: every other
    execution runs on the next worker."""
    log = tmp_path / "runs.log"
    pipeline = with_worker_a(pipeline_factory, log, concurrency=8)  # a worker's default

    executions = [pipeline.submit(recorded, 2.0) for _ in range(24)]
    pipeline.events.wait_for(lambda e: e["type"] == "succeeded", count=16, timeout=60)
    pipeline.events.wait_for(lambda e: e["type"] == "started", count=20, timeout=30)
    pipeline.services.stop("worker-a", sig=signal.SIGKILL)
    pipeline.services.worker("worker-b", RUN_LOG=str(log))

    lost = []
    for execution in executions:
        try:
            assert execution.result(timeout=120) == 2.0
        except cf.ExecutionFailed as exc:
            assert exc.error_type == "WorkerLost"
            lost.append(execution.id)
    ran = runs(log)
    assert 0 < len(lost) <= 8
    assert set(lost) <= set(ran)  # each lost one had begun
    assert sorted(ran) == sorted(e.id for e in executions)  # each body once
