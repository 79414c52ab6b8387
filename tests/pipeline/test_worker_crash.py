"""A worker killed mid-run or before committing: nothing runs twice, nothing waits forever."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from harness import PipelineFactory
from pipeline_tasks import recorded

import cfstream as cf

pytestmark = pytest.mark.kafka


def runs(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def test_a_run_cut_short_by_a_crash_is_reported_not_repeated(
        pipeline_factory: PipelineFactory, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    pipeline = pipeline_factory(workers=0, start=False)
    pipeline.services.processor("processor-0")
    pipeline.services.worker("worker-a", RUN_LOG=str(log))
    pipeline.wait_ready()

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
