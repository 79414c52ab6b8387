"""How a worker calls a task (cfstream.worker.execute)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from cfstream.task import Task
from cfstream.wire import Call, Collect, Modes
from cfstream.worker.execute import prepare

NOW = 1_800_000_000_000


def digest(items: list[dt.date]) -> list[str]:
    return [d.isoformat() for d in items]


def test_a_collected_run_gets_the_list_of_every_calls_argument_decoded() -> None:
    task = Task(fn=digest, name="tests:digest", defer=True, modes=Modes(collect=Collect()))
    call = Call(id="c3", task=task.name, args=[{"$date": "2026-01-03"}], kwargs={},
                submitted_ms=NOW, defer_key="k", modes=Modes(collect=Collect(5, 999)))
    run, ready = prepare(task, dataclasses.replace(call, collected=[
        {"$date": "2026-01-01"}, {"$date": "2026-01-02"}, {"$date": "2026-01-03"}]))
    assert ready is None
    assert run() == ["2026-01-01", "2026-01-02", "2026-01-03"]


def notify(user_id: int, when: dt.datetime) -> None:
    pass


@pytest.mark.parametrize("value", [{"$decimal": "abc"}, {"$uuid": 5}, {"$dict": [1]}])
def test_a_malformed_tagged_argument_fails_the_execution(value: Any) -> None:
    call = Call(id="c1", task="tests:notify", args=[value, value], kwargs={}, submitted_ms=NOW)
    _, ready = prepare(Task(fn=notify, name=call.task), call)
    assert ready is not None and ready.fields["error"]["type"] == "InvalidArguments"


def greet(name: str, greeting: str = "hello", *, loud: bool = False) -> str:
    return f"{greeting} {name}{'!' if loud else ''}"


def pair(a: int, b: int = 2) -> int:
    return a + b


@pytest.mark.parametrize(("fn", "args", "kwargs", "fits"), [
    (pair, [1], {}, True), (pair, [1, 5], {}, True),
    (pair, [], {}, False), (pair, [1, 2, 3], {}, False),  # outside the positional counts
    (pair, [1], {"b": 3}, True), (pair, [], {"a": 1}, True), (pair, [1], {"c": 3}, False),
    # A keyword-only parameter: every call binds through the signature.
    (greet, ["ann"], {}, True), (greet, ["ann"], {"loud": True}, True),
    (greet, [], {"loud": True}, False), (greet, ["ann", "hi", "x"], {}, False),
])
def test_arguments_that_do_not_fit_the_signature_fail_the_execution(
        fn: Any, args: list[Any], kwargs: dict[str, Any], fits: bool) -> None:
    call = Call(id="c2", task="tests:fn", args=args, kwargs=kwargs, submitted_ms=NOW)
    run, ready = prepare(Task(fn=fn, name=call.task), call)
    if fits:
        assert ready is None
        assert run() == fn(*args, **kwargs)
    else:
        assert run is None and ready is not None
        assert ready.fields["error"]["type"] == "InvalidArguments"
        assert "arguments do not fit tests:fn: TypeError:" in ready.fields["error"]["message"]
