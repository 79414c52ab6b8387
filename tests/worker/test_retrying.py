"""What follows a failed attempt (cfstream.worker.retrying): a pure function of the call, the
task's retries, the outcome and the time."""

from __future__ import annotations

import dataclasses

import pytest

from cfstream.retries import Retries
from cfstream.wire import NO_MODES, Call, Collect, Modes
from cfstream.worker.execute import failure, from_exception, lost
from cfstream.worker.retrying import next_attempt

NOW = 1_800_000_000_000
CALL = Call(id="c1", task="t:send", args=[1], kwargs={"x": 2}, submitted_ms=NOW - 10,
            delay_ms=60_000, defer_key="k")
BOOM = from_exception(ConnectionError("down"))


def test_a_retried_error_gives_the_next_attempt_after_the_policy_s_delay() -> None:
    retry = next_attempt(CALL, Retries(limit=3, delay_min=10, delay_max=30), BOOM, NOW)
    assert retry == dataclasses.replace(CALL, attempt=2, not_before_ms=NOW + 10_000)
    assert retry is not None
    third = next_attempt(retry, Retries(limit=3, delay_min=10, delay_max=30), BOOM, NOW)
    assert third is not None and (third.attempt, third.not_before_ms) == (3, NOW + 20_000)


@pytest.mark.parametrize(("policy", "attempt"), [(None, 1), (Retries(limit=2), 3)])
def test_no_retry_without_retries_left(policy: Retries | None, attempt: int) -> None:
    call = dataclasses.replace(CALL, attempt=attempt, not_before_ms=NOW if attempt > 1 else None)
    assert next_attempt(call, policy, BOOM, NOW) is None


def test_only_the_errors_the_task_retries_on_retry() -> None:
    policy = Retries(on=(ConnectionError,))
    assert next_attempt(CALL, policy, from_exception(ValueError("bad")), NOW) is None
    assert next_attempt(CALL, policy, from_exception(TimeoutError()), NOW) is None
    assert next_attempt(CALL, policy, BOOM, NOW) is not None


def test_a_lost_worker_always_retries_and_a_failure_without_an_exception_never() -> None:
    policy = Retries(on=(ConnectionError,))
    assert next_attempt(CALL, policy, lost("host:1"), NOW) is not None
    assert next_attempt(CALL, policy, failure("TaskNotRegistered", "no task"), NOW) is None


def test_a_collected_run_is_retried_alone_with_its_list() -> None:
    run = dataclasses.replace(CALL, modes=Modes(leading=True, collect=Collect(10, 1_000)),
                              max_wait_ms=5_000, collected=[1, 2, 3])
    retry = next_attempt(run, Retries(), BOOM, NOW)
    assert retry is not None
    assert (retry.args, retry.kwargs, retry.defer_key, retry.key) == ([[1, 2, 3]], {}, None, "c1")
    assert (retry.modes, retry.collected, retry.max_wait_ms) == (NO_MODES, None, None)
    assert (retry.attempt, retry.not_before_ms) == (2, NOW)
