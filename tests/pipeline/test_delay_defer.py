"""The seed page's semantics, end to end through the real broker, processor and worker.

Every assertion is on the timestamps the events carry (submit, due, start), not on sleeps.
"""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest
from confluent_kafka import Producer
from harness import LATE_MS, Pipeline
from pipeline_tasks import (
    D_MS,
    D,
    after_seconds,
    after_timedelta,
    async_echo,
    explode,
    notify,
    notify_update,
)

import cfstream as cf
from cfstream.clock import now_ms
from cfstream.ids import new_execution_id

pytestmark = pytest.mark.kafka

RESULT_TIMEOUT = 30


def tag() -> str:
    return uuid.uuid4().hex[:10]


def started(pipeline: Pipeline, execution: cf.Execution) -> dict:
    return pipeline.events.one(execution.id, "started")


def submitted_ms(pipeline: Pipeline, execution: cf.Execution) -> int:
    return pipeline.events.one(execution.id, "scheduled")["submitted_ms"]


@pytest.mark.parametrize("task", [after_timedelta, after_seconds], ids=["timedelta", "seconds"])
def test_delay_starts_no_earlier_than_submit_plus_delay_and_soon_after(
        pipeline: Pipeline, task: cf.Task) -> None:
    value = tag()
    execution = pipeline.submit(task, value)
    assert execution.result(timeout=RESULT_TIMEOUT) == value
    start = started(pipeline, execution)
    submit = submitted_ms(pipeline, execution)
    assert start["due_ms"] == submit + D_MS
    assert submit + D_MS <= start["ts_ms"] <= submit + D_MS + LATE_MS


def test_three_equal_calls_in_the_window_run_once_at_last_call_plus_delay(
        pipeline: Pipeline) -> None:
    user = tag()
    calls = []
    for _ in range(3):
        calls.append(pipeline.submit(notify, user, 7))
        time.sleep(0.2 * D)
    results = [c.result(timeout=RESULT_TIMEOUT) for c in calls]
    assert results == [f"{user}:7"] * 3

    survivor = calls[-1]
    deferred = [pipeline.events.one(c.id, "deferred") for c in calls[:2]]
    assert [d["successor"] for d in deferred] == [calls[1].id, survivor.id]
    assert [c.status() for c in calls] == ["deferred", "deferred", "succeeded"]
    start = started(pipeline, survivor)
    pipeline.events.one(survivor.id, "succeeded")
    assert all(not pipeline.events.of(c.id, "started") for c in calls[:2])
    last = submitted_ms(pipeline, survivor)
    assert last + D_MS <= start["ts_ms"] <= last + D_MS + LATE_MS


def test_different_arguments_run_separately(pipeline: Pipeline) -> None:
    user = tag()
    first = pipeline.submit(notify, user, 1)
    second = pipeline.submit(notify, user, 2)
    assert first.result(timeout=RESULT_TIMEOUT) == f"{user}:1"
    assert second.result(timeout=RESULT_TIMEOUT) == f"{user}:2"
    assert started(pipeline, first)["id"] != started(pipeline, second)["id"]


def test_key_function_ignores_update_and_the_latest_update_runs(pipeline: Pipeline) -> None:
    user = tag()
    calls = [pipeline.submit(notify_update, user, 3, update=f"edit-{i}") for i in range(3)]
    assert {c.result(timeout=RESULT_TIMEOUT) for c in calls} == {f"{user}:3:edit-2"}
    assert pipeline.events.one(calls[0].id, "deferred")["defer_key"] == f"#{user}:#3"
    pipeline.events.one(calls[-1].id, "succeeded")
    assert [bool(pipeline.events.of(c.id, "started")) for c in calls] == [False, False, True]


def test_quiet_period_restarts_with_each_call(pipeline: Pipeline) -> None:
    user = tag()
    t0 = time.monotonic()
    calls = []
    for at in (0, 0.8 * D, 1.6 * D):
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        calls.append(pipeline.submit(notify, user, 1))
    calls[-1].result(timeout=RESULT_TIMEOUT)
    first = submitted_ms(pipeline, calls[0])
    start = started(pipeline, calls[-1])["ts_ms"]
    # It fires a delay after the last call (about 2.6 d after the first), not a delay after the
    # first (d): each call restarted the quiet period.
    assert start - first >= 2.6 * D_MS - 50
    assert start - submitted_ms(pipeline, calls[-1]) >= D_MS
    assert start - first <= 2.6 * D_MS + LATE_MS
    pipeline.events.one(calls[-1].id, "succeeded")
    assert sum(bool(pipeline.events.of(c.id, "started")) for c in calls) == 1


def test_a_break_longer_than_the_delay_gives_two_executions(pipeline: Pipeline) -> None:
    user = tag()
    first = pipeline.submit(notify, user, 1)
    first.result(timeout=RESULT_TIMEOUT)
    second = pipeline.submit(notify, user, 1)
    assert second.result(timeout=RESULT_TIMEOUT) == f"{user}:1"
    assert started(pipeline, first)["id"] != started(pipeline, second)["id"]
    assert submitted_ms(pipeline, second) - submitted_ms(pipeline, first) > D_MS


def test_max_wait_caps_how_long_a_stream_of_calls_postpones_a_run(pipeline: Pipeline) -> None:
    d = 0.8
    capped = dataclasses.replace(notify, delay_ms=int(d * 1000), max_wait_ms=int(2 * d * 1000))
    user = tag()
    t0 = time.monotonic()
    calls = []
    for i in range(10):  # every 0.5 d for 5 d
        time.sleep(max(0.0, t0 + i * 0.5 * d - time.monotonic()))
        calls.append(pipeline.submit(capped, user, 9))
    ids = {c.id for c in calls}
    first_start = pipeline.events.wait_for(
        lambda e: e["type"] == "started" and e["id"] in ids, timeout=RESULT_TIMEOUT)[0]
    first_submit = submitted_ms(pipeline, calls[0])
    assert first_start["due_ms"] == first_submit + 1600
    assert first_start["ts_ms"] - first_submit <= 1600 + LATE_MS
    for c in calls:
        assert c.result(timeout=RESULT_TIMEOUT) == f"{user}:9"


def test_failure_reaches_the_waiter_and_the_waiters_of_replaced_calls(
        pipeline: Pipeline) -> None:
    name = tag()
    calls = [pipeline.submit(explode, name, attempt) for attempt in range(3)]
    for call in calls:
        with pytest.raises(cf.ExecutionFailed) as info:
            call.result(timeout=RESULT_TIMEOUT)
        assert info.value.error_type == "ValueError"
        assert info.value.message == f"boom {name} attempt 2"
        assert "raise ValueError" in info.value.traceback
        assert info.value.execution_id == calls[-1].id


def test_async_task_and_rich_argument_types(pipeline: Pipeline) -> None:
    import datetime as dt
    import decimal

    value = {"when": dt.datetime(2026, 11, 24, 3, 0, tzinfo=dt.UTC), "amount":
             decimal.Decimal("12.50"), "id": uuid.uuid4(), "raw": b"\x00\x01"}
    assert pipeline.submit(async_echo, value).result(timeout=RESULT_TIMEOUT) == value


def test_integers_beyond_64_bits_arrive_exactly_and_nan_is_refused(pipeline: Pipeline) -> None:
    """Through the processor, the worker and the waiter and back; orjson alone reads such an
    integer as a float, and Python's json reads NaN, which orjson then writes as null."""
    value = {"big": 10**30, "u64": 2**64, "low": -2**63 - 1, "small": 2**63 - 1}
    back = pipeline.submit(async_echo, value).result(timeout=RESULT_TIMEOUT)
    assert back == value and all(type(n) is int for n in back.values())

    # What a producer in another language might write: NaN is not JSON.
    call_id = new_execution_id()
    record = (f'{{"v":1,"kind":"call","id":"{call_id}","task":"{async_echo.name}",'
              f'"args":[NaN],"kwargs":{{}},"submitted_ms":{now_ms()},"delay_ms":0,'
              '"defer_key":null,"max_wait_ms":null}')
    producer = Producer({"bootstrap.servers": pipeline.settings.bootstrap_servers})
    producer.produce(pipeline.settings.calls_topic, key=call_id.encode(), value=record.encode())
    assert producer.flush(10) == 0
    with pytest.raises(cf.SubmitError, match="numbers must be finite"):
        cf.Execution(call_id, client=pipeline.client).result(timeout=RESULT_TIMEOUT)
    assert "numbers must be finite" in pipeline.events.one(call_id, "invalid")["reason"]
    assert [e["type"] for e in pipeline.events.of(call_id)] == ["invalid"]


def test_submit_by_name_and_wait_from_another_process(pipeline: Pipeline) -> None:
    import subprocess
    import sys

    value = tag()
    execution = cf.submit("pipeline_tasks:after_seconds", [value], delay=0.2,
                          client=pipeline.client)
    code = (
        "import cfstream as cf, sys;"
        f"cf.configure(cf.Settings(bootstrap_servers={pipeline.settings.bootstrap_servers!r},"
        f"topic_prefix={pipeline.settings.topic_prefix!r}));"
        f"print(cf.Execution({execution.id!r}).result(timeout=30))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == value


def test_unregistered_task_fails_clearly_and_the_worker_keeps_going(pipeline: Pipeline) -> None:
    execution = cf.submit("nowhere:missing", [1], client=pipeline.client)
    with pytest.raises(cf.ExecutionFailed) as info:
        execution.result(timeout=RESULT_TIMEOUT)
    assert info.value.error_type == "TaskNotRegistered"
    assert "cfstream worker MODULE" in info.value.message
    value = tag()
    assert pipeline.submit(after_seconds.with_delay(0), value).result(timeout=RESULT_TIMEOUT) \
        == value


def test_a_task_knows_its_execution(pipeline: Pipeline) -> None:
    from pipeline_tasks import whoami

    execution = pipeline.submit(whoami)
    assert execution.result(timeout=RESULT_TIMEOUT) == execution.id
    assert cf.current_execution() is None


def test_calls_submitted_while_others_fire_all_fire_on_time(pipeline: Pipeline) -> None:
    """The lost-timer case: calls keep arriving while the processor's timer fires earlier ones,
    so batches are in flight as it scans. Every call fires once, none late, none lost."""
    delayed = after_seconds.with_delay(0.5)
    calls = []
    began = time.monotonic()
    for i in range(150):  # ~3 s of calls 20 ms apart: the first fire while the rest arrive
        calls.append(pipeline.submit(delayed, f"{i}"))
        time.sleep(max(0.0, began + (i + 1) * 0.02 - time.monotonic()))
    for i, call in enumerate(calls):
        assert pipeline.result(call, timeout=RESULT_TIMEOUT) == f"{i}"
    for call in calls:
        start = started(pipeline, call)
        assert 0 <= start["ts_ms"] - start["due_ms"] < LATE_MS, start
        assert len(pipeline.events.of(call.id, "started")) == 1
