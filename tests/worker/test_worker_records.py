"""What a worker writes, driven in memory: its records match the schemas in cfstream/schemas/."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
from typing import Any

from schema_checks import assert_valid, check_event, declared, processor_accepts
from worker_harness import NOW, fired

from cfstream.codec import dumps, to_json_value
from cfstream.task import Task
from cfstream.wire import Modes

WHEN = to_json_value(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))


class TaskError(Exception):
    pass


def ok(user_id: int, when: dt.datetime) -> dict[str, Any]:
    return {"user": user_id, "when": when, "amount": decimal.Decimal("2.5"), "raw": b"\x00",
            "pair": (1, 2), "$odd": None}


def boom() -> None:
    raise TaskError("boom")


def unjsonable() -> object:
    return object()


async def async_ok(x: int) -> list[int]:
    await asyncio.sleep(0)
    return [x, x]


TASKS = [Task(fn=ok, name="tests.worker:ok"), Task(fn=boom, name="tests.worker:boom"),
         Task(fn=unjsonable, name="tests.worker:unjsonable"),
         Task(fn=async_ok, name="tests.worker:async_ok")]


def test_worker_events_match_the_event_schema(harness_of: Any) -> None:
    harness = harness_of(TASKS)
    executions = [
        fired("tests.worker:ok", [1, WHEN]),
        fired("tests.worker:boom", []),
        fired("tests.worker:unjsonable", []),
        fired("tests.worker:async_ok", [3]),
        fired("tests.worker:missing", []),
        fired("tests.worker:ok", ["too", "many", "args"]),
        fired("tests.worker:ok", [1, WHEN], key="same", at=NOW),
        fired("tests.worker:ok", [2, WHEN], key="same", at=NOW + 1),
    ]
    harness.feed(*executions)
    harness.run_until(harness.ended(len(executions)))
    events = harness.events()
    assert len([e for e in events if e["type"] != "started"]) == len(executions), events
    for sent in harness.producer.sent:
        assert sent.topic == harness.settings.events_topic
        assert sent.key == sent.record["id"].encode()
        check_event(sent.record)
    assert {e["type"] for e in events} == {"started", "succeeded", "failed", "deferred"}
    errors = {e["error"]["type"] for e in events if e["type"] == "failed"}
    assert errors == {f"{__name__}.TaskError", "ResultNotSerializable", "TaskNotRegistered",
                      "InvalidArguments"}
    assert [(e["reason"], e["successor"]) for e in harness.events("deferred")] == [
        ("backlog", executions[-1].call.id)]


def test_worker_finished_records_match_the_call_schema(harness_of: Any) -> None:
    """if_running="after": once an execution's outcome is out, the worker tells the processor
    that the key's run ended, on the calls topic with the call's key."""
    harness = harness_of(TASKS)
    executions = [fired(task, args, key=f"key:{i}", at=NOW + i, delay_ms=5,
                        modes=Modes(if_running="after"))
                  for i, (task, args) in enumerate([("tests.worker:ok", [1, WHEN]),
                                                    ("tests.worker:boom", [])])]
    harness.feed(*executions)
    calls_topic = harness.settings.calls_topic
    harness.run_until(lambda: len(harness.producer.on(calls_topic)) == len(executions))
    by_id = {e.call.id: e.call for e in executions}
    finished = [sent for sent in harness.producer.sent if sent.topic == calls_topic]
    assert sorted(sent.record["id"] for sent in finished) == sorted(by_id)
    for sent in finished:
        record = sent.record
        assert_valid("call", record)
        assert_valid("call", record, "control")
        assert set(record) <= declared("call", "control")
        assert processor_accepts(dumps(record))
        assert record == {"v": 1, "kind": "finished", "id": record["id"], "attempt": 1}
        assert sent.key == by_id[record["id"]].key.encode()
    order = [(sent.topic, sent.record) for sent in harness.producer.sent]
    for call in by_id.values():
        ended = next(i for i, (topic, r) in enumerate(order)
                     if topic == harness.settings.events_topic and r["id"] == call.id
                     and r["type"] in ("succeeded", "failed"))
        said = next(i for i, (topic, r) in enumerate(order)
                    if topic == calls_topic and r["id"] == call.id)
        assert ended < said


def test_worker_invalid_records_match_the_event_schema(harness_of: Any) -> None:
    harness = harness_of(TASKS)
    readable = fired("tests.worker:ok", [1, WHEN])
    records = [b"{not json", b"[]", None, dumps({**readable.to_dict(), "fired_ms": "late"})]
    harness.feed(*records)
    harness.run_until(lambda: len(harness.events()) == len(records))
    letters = [sent for sent in harness.producer.sent
               if sent.topic == harness.settings.dead_letter_topic]
    assert len(letters) == len(records)
    for sent in harness.producer.sent:
        if sent.topic == harness.settings.events_topic:
            check_event(sent.record)
            # As the processor's: keyed by the record's id when it has one, so its waiters learn.
            assert sent.record["type"] == "invalid"
            assert sent.key == (sent.record["id"] or "invalid").encode()
    assert [e["id"] for e in harness.events()] == [None, None, None, readable.call.id]
    for sent in letters:
        assert {name for name, _ in sent.headers} == {"cfstream-reason", "cfstream-source"}
    # Parked and said: their offsets are done.
    assert harness.committed() == {0: len(records)}
