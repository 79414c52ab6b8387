"""Events the scheduling rules and the worker's outcomes produce match the event schema.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
from typing import Any

import pytest
from built_calls import CALLS, notify
from schema_checks import ID, NOW, assert_invalid, check_event

from cfstream.scheduling import rules
from cfstream.task import Task
from cfstream.wire import (
    EVENT_TYPES,
    Call,
    Collect,
    FiredCall,
    Modes,
    event,
)
from cfstream.worker import execute


def rule_events() -> list[dict[str, Any]]:
    def make(call_id: str, submitted: int, delay: int = 1_000, key: str | None = "k",
             max_wait: int | None = None) -> Call:
        return Call(id=call_id, task="tests.schemas:notify", args=[1], kwargs={},
                    submitted_ms=submitted, delay_ms=delay, defer_key=key, max_wait_ms=max_wait)

    out: list[dict[str, Any]] = []
    first = rules.accept(None, make("a", NOW, max_wait=5_000), NOW, 60_000)
    second = rules.accept(first.slot, make("b", NOW + 10), NOW + 10, 60_000)
    late = rules.accept(second.slot, make("old", NOW - 10), NOW + 20, 60_000)
    fired = rules.tick(second.slot, "b", NOW + 2_000, 60_000)
    after = rules.accept(fired.slot, make("older", NOW - 5), NOW + 2_001, 60_000)
    at_once = rules.accept(None, make("now", NOW, delay=0, key=None), NOW, 60_000)
    pending = rules.accept(None, make("c", NOW), NOW, 60_000)
    cancelled = rules.cancel(pending.slot, "c", NOW + 1, 60_000, reason="user left")
    default = rules.cancel(pending.slot, "c", NOW + 1, 0)
    # A retry of "b" (as a worker puts it on the calls topic), then a newer call replacing it.
    retry = dataclasses.replace(make("b", NOW + 10), attempt=2, not_before_ms=NOW + 9_000)
    retried = rules.accept(fired.slot, retry, NOW + 3_000, 60_000)
    replaced = rules.accept(retried.slot, make("d", NOW + 3_500), NOW + 3_500, 60_000)
    def moded(call: Call, **modes: Any) -> Call:
        return dataclasses.replace(call, modes=Modes(**modes))

    kept = rules.accept(pending.slot, moded(make("d", NOW + 5), keep="first"), NOW + 5, 60_000)
    lead = rules.accept(None, moded(make("e", NOW), leading=True), NOW, 60_000)
    assert lead.executions
    gathered = rules.accept(None, moded(make("f", NOW), collect=Collect(5, 99)), NOW, 0)
    gathered = rules.accept(gathered.slot, moded(make("g", NOW + 1), collect=Collect(5, 99)),
                            NOW + 1, 0)
    # if_running="after": "h" fires at once and runs; "i" is held until it finishes.
    running = rules.accept(None, moded(make("h", NOW, delay=0), if_running="after"), NOW,
                           60_000)
    held = rules.accept(running.slot, moded(make("i", NOW + 1), if_running="after"), NOW + 1,
                        60_000)
    assert running.executions and held.events[-1]["after"] == "h"
    for decision in (first, second, late, fired, after, at_once, pending, cancelled, default,
                     retried, replaced, kept, lead, gathered, running, held):
        out += decision.events
    assert fired.executions and at_once.executions
    return out


def outcome_events() -> list[dict[str, Any]]:
    """Outcomes of cfstream.worker.execute wrapped with wire.event the way the worker reports them."""
    call = CALLS[0]
    execution = FiredCall(call=call, due_ms=NOW, fired_ms=NOW + 3)
    worker = "host:1234"

    class CustomError(Exception):
        pass

    def run(fn: Any) -> execute.Outcome:
        try:
            return execute.success(fn(), call.task)
        except Exception as exc:
            return execute.from_exception(exc)

    def boom() -> None:
        raise CustomError("no")

    outcomes = [
        execute.success(None, call.task),
        execute.success({"at": dt.datetime(2026, 1, 1), "n": decimal.Decimal("1")}, call.task),
        execute.success(object(), call.task),  # ResultNotSerializable
        run(lambda: 1 / 0),
        run(boom),
        execute.prepare(None, call)[1],  # TaskNotRegistered
        execute.prepare(Task(fn=notify, name=call.task), Call(
            id=ID, task=call.task, args=[], kwargs={}, submitted_ms=NOW))[1],  # InvalidArguments
    ]
    events = [event("started", call, NOW + 4, worker=worker, due_ms=execution.due_ms,
                    fired_ms=execution.fired_ms),
              event("deferred", call, NOW + 4, successor=ID, reason="backlog")]
    for outcome in outcomes:
        assert outcome is not None
        events.append(event(outcome.type, call, NOW + 5, worker=worker, **outcome.fields))
    lost = execute.failure("WorkerLost", "worker host:1 stopped")
    events.append(event("retrying", call, NOW + 6, worker=worker, attempt=1, next_attempt=2,
                        retry_at_ms=NOW + 1_006, **lost.fields))
    second = dataclasses.replace(call, attempt=2, not_before_ms=NOW + 1_006)
    events.append(event("failed", second, NOW + 2_000, worker=worker, **run(boom).fields))
    kinds = {e.get("error", {}).get("type") for e in events}
    assert {"ResultNotSerializable", "ZeroDivisionError", "TaskNotRegistered",
            "InvalidArguments"} <= kinds
    assert any(str(kind).endswith("CustomError") for kind in kinds)
    return events



@pytest.mark.parametrize("source", [rule_events, outcome_events])
def test_events_match_the_event_schema(source: Any) -> None:
    events = source()
    assert events
    for record in events:
        check_event(record)


def test_every_deferral_reason_and_event_type_is_covered() -> None:
    events = rule_events() + outcome_events()
    reasons = {e["reason"] for e in events if e["type"] == "deferred"}
    assert reasons == {"replaced", "out_of_order", "backlog", "kept_first", "collected"}
    assert {e["type"] for e in events} == set(EVENT_TYPES) - {"invalid"}


@pytest.mark.parametrize("change", [
    {"type": "exploded"}, {"type": None}, {"successor": 5}, {"reason": "bored"},
    {"id": ""}, {"ts_ms": "now"}, {"ts_ms": 1.5}, {"v": 2}, {"defer_key": 5}, {"task": None},
])
def test_broken_events_do_not_match(change: dict[str, Any]) -> None:
    base = event("deferred", CALLS[0], NOW, successor=ID, reason="replaced")
    check_event(base)
    assert_invalid("event", {**base, **change})


@pytest.mark.parametrize("missing", ["v", "type", "id", "task", "defer_key", "ts_ms", "successor",
                                     "reason"])
def test_events_missing_a_field_do_not_match(missing: str) -> None:
    base = event("deferred", CALLS[0], NOW, successor=ID, reason="replaced")
    assert_invalid("event", {k: v for k, v in base.items() if k != missing})


def test_failed_events_need_the_whole_error() -> None:
    base = event("failed", CALLS[0], NOW, worker="h:1",
                 **execute.failure("ValueError", "bad", "Traceback ...").fields)
    check_event(base)
    for field in ("type", "message", "traceback"):
        broken = {**base, "error": {k: v for k, v in base["error"].items() if k != field}}
        assert_invalid("event", broken)
    assert_invalid("event", {k: v for k, v in base.items() if k != "worker"})
