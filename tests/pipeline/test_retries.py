"""Retries on the real pipeline: a failed attempt runs again after its backoff, through the
processor; waiters wait across attempts; a lost worker's attempt is retried; a newer call
replaces a retry that waits."""

from __future__ import annotations

import signal
import uuid

import pytest
from harness import Pipeline, PipelineFactory
from pipeline_tasks import flaky, outlives_a_crash, picky, settles

import cfstream as cf

pytestmark = pytest.mark.kafka

RESULT_TIMEOUT = 60


def attempts_of(pipeline: Pipeline, execution_id: str, kind: str, count: int) -> list[dict]:
    """The execution's ``count`` events of ``kind``, by attempt (waiting for them to be read)."""
    found = pipeline.events.wait_for(lambda e: e.get("id") == execution_id and e["type"] == kind,
                                     count=count, timeout=RESULT_TIMEOUT)
    return sorted(found, key=lambda e: e.get("attempt", 1))


def test_failed_attempts_run_again_after_a_growing_backoff(pipeline: Pipeline) -> None:
    execution = pipeline.submit(flaky, uuid.uuid4().hex, 2)
    assert pipeline.result(execution, RESULT_TIMEOUT) == 3  # the third attempt succeeded

    retrying = attempts_of(pipeline, execution.id, "retrying", 2)
    assert [(e["attempt"], e["next_attempt"]) for e in retrying] == [(1, 2), (2, 3)]
    assert all(e["error"]["type"] == "ConnectionError" for e in retrying)
    # Backoff from delay_min 0.5 s to delay_max 1 s over a limit of 3: 0.5 s, then 0.75 s.
    assert [e["retry_at_ms"] - e["ts_ms"] for e in retrying] == pytest.approx([500, 750], abs=50)
    started = attempts_of(pipeline, execution.id, "started", 3)
    assert [e.get("attempt", 1) for e in started] == [1, 2, 3]
    for retry, start in zip(retrying, started[1:], strict=True):
        assert start["ts_ms"] >= retry["retry_at_ms"]  # never before its backoff
        assert start["due_ms"] == retry["retry_at_ms"]
    scheduled = attempts_of(pipeline, execution.id, "scheduled", 3)
    assert [e.get("attempt", 1) for e in scheduled] == [1, 2, 3]


def test_when_every_attempt_fails_the_waiter_gets_the_last_error(pipeline: Pipeline) -> None:
    tag = uuid.uuid4().hex
    execution = pipeline.submit(flaky, tag, 10)
    with pytest.raises(cf.ExecutionFailed) as failed:
        execution.result(timeout=RESULT_TIMEOUT)
    assert failed.value.error_type == "ConnectionError"
    assert failed.value.message == f"attempt 4 of {tag} failed"  # limit 3: four attempts
    assert execution.status() == "failed"
    assert len(attempts_of(pipeline, execution.id, "retrying", 3)) == 3


def test_only_the_listed_errors_retry(pipeline: Pipeline) -> None:
    value_error = pipeline.submit(picky, "value")
    with pytest.raises(cf.ExecutionFailed) as failed:
        value_error.result(timeout=RESULT_TIMEOUT)
    assert failed.value.error_type == "ValueError"
    pipeline.events.one(value_error.id, "failed")  # read up to its end: no retrying before it
    assert pipeline.events.of(value_error.id, "retrying") == []
    connection = pipeline.submit(picky, "connection")
    with pytest.raises(cf.ExecutionFailed) as failed:
        connection.result(timeout=RESULT_TIMEOUT)
    assert failed.value.error_type == "ConnectionError"
    assert len(attempts_of(pipeline, connection.id, "retrying", 2)) == 2


def test_a_newer_call_replaces_a_retry_that_waits(pipeline: Pipeline) -> None:
    key = uuid.uuid4().hex
    first = pipeline.submit(settles, key, "bad")
    retrying = pipeline.events.one(first.id, "retrying", timeout=RESULT_TIMEOUT)
    assert retrying["retry_at_ms"] - retrying["ts_ms"] == pytest.approx(5_000, abs=50)
    second = pipeline.submit(settles, key, "good")
    # The waiter on the first call follows it to the newer one, which runs at once.
    assert pipeline.result(first, RESULT_TIMEOUT) == "good"
    deferred = pipeline.events.one(first.id, "deferred")
    assert deferred["successor"] == second.id and deferred["attempt"] == 2
    assert deferred["ts_ms"] < retrying["retry_at_ms"]
    pipeline.events.one(second.id, "succeeded")
    assert [e.get("attempt", 1) for e in pipeline.events.of(first.id, "started")] == [1]


def test_an_attempt_cut_short_by_a_lost_worker_is_retried(
        pipeline_factory: PipelineFactory) -> None:
    pipeline = pipeline_factory()  # of its own: its worker is killed
    execution = pipeline.submit(outlives_a_crash, 60)
    pipeline.events.one(execution.id, "started", timeout=RESULT_TIMEOUT)
    pipeline.services.stop("worker-0", sig=signal.SIGKILL)
    pipeline.services.worker("worker-1")

    assert pipeline.result(execution, 120) == 2
    retrying = pipeline.events.one(execution.id, "retrying")
    assert retrying["error"]["type"] == "WorkerLost" and retrying["attempt"] == 1
    pipeline.events.one(execution.id, "succeeded")
    assert pipeline.events.of(execution.id, "failed") == []
