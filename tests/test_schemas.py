"""The JSON Schemas in cfstream/schemas/ against the records the code really writes and reads.

Records come from the code itself: Call/FiredCall/Control objects, the client's call building,
the scheduling rules, a processor and a worker driven with in-memory stand-ins for Kafka. The
calls-topic schema must accept a record iff the processor does (apart from the clock-skew check,
the record key and the size limit). The tests at the end pin the places where they once
differed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import decimal
import functools
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import murmur2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from cfstream.calls import submit
from cfstream.client import Client
from cfstream.codec import dumps, to_json_value
from cfstream.ids import new_execution_id
from cfstream.processor import state
from cfstream.processor.partition import PartitionTask
from cfstream.scheduling import rules
from cfstream.settings import Settings
from cfstream.task import Collect, Defer, Task
from cfstream.wire import (
    EVENT_TYPES,
    MAX_DELAY_MS,
    Call,
    Control,
    FiredCall,
    InvalidRecord,
    call_from_dict,
    control_from_dict,
    event,
    execution_from_dict,
    parse_json,
)
from cfstream.worker import execute
from cfstream.worker.runner import Worker

DOC = Path(__file__).resolve().parents[1] / "docs" / "wire-format.md"
NOW = 1_700_000_000_000
ID = "0190a5b2-6c3e-7a01-8f00-3b9d2c4e5f60"
BIG = 1 << 30  # payload limit for parse_json in these tests: size is not what they check


# -- loading --------------------------------------------------------------------------------


def load(name: str) -> dict[str, Any]:
    text = (resources.files("cfstream") / "schemas" / f"{name}.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def validator(name: str, definition: str | None = None) -> Draft202012Validator:
    schema = load(name)
    Draft202012Validator.check_schema(schema)
    if definition is not None:
        schema = {"$schema": schema["$schema"], "$defs": schema["$defs"],
                  "$ref": f"#/$defs/{definition}"}
    return Draft202012Validator(schema)


def assert_valid(name: str, record: Any, definition: str | None = None) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '<record>'}: {e.message}"
              for e in validator(name, definition).iter_errors(record)]
    assert not errors, f"{name} schema rejects {record!r}: {errors}"


def assert_invalid(name: str, record: Any) -> None:
    assert not validator(name).is_valid(record), f"{name} schema accepts {record!r}"


def declared(name: str, definition: str | None = None) -> set[str]:
    schema = load(name)
    node = schema["$defs"][definition] if definition else schema
    return set(node["properties"])


@pytest.mark.parametrize("name", ["call", "execution", "event"])
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = load(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_shared_definitions_are_the_same_in_every_schema() -> None:
    call, execution, events = load("call"), load("execution"), load("event")
    for name in ("encodedValue", "taggedValue"):
        assert events["$defs"][name] == call["$defs"][name]
    assert execution["$defs"]["duration"] == call["$defs"]["duration"]
    call_fields = call["$defs"]["call"]["properties"]
    for field, spec in call_fields.items():
        if field != "kind":
            assert execution["properties"][field] == spec, field
    for keyword in ("if", "then", "allOf"):
        assert execution[keyword] == call["$defs"]["call"][keyword]


def test_schema_bounds_are_the_code_constants() -> None:
    duration = load("call")["$defs"]["duration"]
    assert (duration["minimum"], duration["maximum"]) == (0, MAX_DELAY_MS)
    assert [ref["$ref"].rsplit("/", 1)[1] for ref in load("event")["oneOf"]] == list(EVENT_TYPES)
    assert load("event")["properties"]["type"]["enum"] == list(EVENT_TYPES)


# -- calls the code builds --------------------------------------------------------------------


class CapturingClient(Client):
    """The real task and client encoding, with producing replaced by keeping the
    record (read back as a Call)."""

    def __init__(self) -> None:
        super().__init__(Settings())
        self.calls: list[Call] = []

    def send(self, task: str, key: bytes, value: bytes) -> None:
        call = call_from_dict(json.loads(value))
        # The record is the one encoding of the call, under the call's key.
        assert value == dumps(call.to_dict())
        assert key == call.key.encode()
        assert call.task == task
        self.calls.append(call)


def notify(user_id: int, when: dt.datetime, *, amount: decimal.Decimal = decimal.Decimal("1.50"),
           tags: tuple[str, ...] = ()) -> None:
    """A task signature for building calls."""


def collected(items: list[tuple[int, dt.date]]) -> None:
    """A collect task's signature."""


ODD_ARGS = (7, dt.datetime(2026, 11, 24, 3, 43, 14, 123456, tzinfo=dt.timezone.utc))
ODD_KWARGS = {"amount": decimal.Decimal("12.50"), "tags": ("a", "b")}


def built_calls() -> list[Call]:
    client = CapturingClient()
    name = "tests.schemas:notify"
    tasks = [
        Task(fn=notify, name=name),
        Task(fn=notify, name=name, delay_ms=60_000),
        Task(fn=notify, name=name, delay_ms=60_000, defer=True, max_wait_ms=600_000),
        Task(fn=notify, name=name, defer=Defer(params=["user_id"])),
        Task(fn=notify, name=name, defer=lambda user_id, *_a, **_k: f"user:{user_id}"),
        Task(fn=notify, name=name, delay_ms=60_000, defer=True, leading=True),
        Task(fn=notify, name=name, defer=Defer(params=["user_id"]), keep="first"),
        Task(fn=notify, name=name, delay_ms=1, defer=True, max_wait_ms=9, leading=True,
             keep="first"),
        Task(fn=notify, name=name, delay_ms=60_000, defer=True, if_running="after"),
    ]
    for task in tasks:
        task.submit_to(client, *ODD_ARGS, **ODD_KWARGS)
    for collector in (Task(fn=collected, name="tests.schemas:collected", delay_ms=5, defer=True,
                           collect=Collect()),
                      Task(fn=collected, name="tests.schemas:collected", delay_ms=5,
                           defer=lambda item: str(item[0]), leading=True,
                           collect=Collect(max_calls=2, max_bytes=99))):
        collector.submit_to(client, (7, dt.date(2026, 1, 1)))
    long_key = Task(fn=notify, name=name, defer=True)  # a key over 128 chars becomes sha256:...
    long_key.submit_to(client, 1, dt.datetime(2026, 1, 1), tags=("x" * 200,))
    submit("billing.tasks:charge", [1, dt.date(2026, 1, 2), uuid.UUID(int=5)],
           {"blob": b"\x00\xff", "ref": {"$ref": "#/x"}, "nested": [{"a": None}]},
           delay=1.5, defer_key="customer:1", max_wait=dt.timedelta(minutes=5), client=client)
    submit("billing.tasks:charge", client=client)
    submit("billing.tasks:charge", defer_key="", client=client)
    submit("billing.tasks:charge", [2], delay=3, defer_key="customer:2", leading=True,
           keep="first", client=client)
    submit("billing.tasks:charge", [3], defer_key="customer:3", keep="last", client=client)
    submit("billing.tasks:charge", [{"n": 4}], defer_key="customer:4", collect=True, client=client)
    submit("billing.tasks:charge", [5], delay=3, defer_key="customer:5", keep="first",
           if_running="after", client=client)
    made = list(client.calls)
    made.append(Call(id=ID, task="app.tasks:plain", args=[], kwargs={}, submitted_ms=NOW))
    made.append(Call(id=ID, task="app.tasks:full", args=[1, [2, 3]], kwargs={"x": {"y": 1.5}},
                     submitted_ms=NOW, delay_ms=MAX_DELAY_MS, defer_key="k",
                     max_wait_ms=MAX_DELAY_MS))
    return made


CALLS = built_calls()


def test_the_client_builds_every_flavour_of_call() -> None:
    assert {c.defer_key is None for c in CALLS} == {True, False}
    assert any(c.max_wait_ms is not None for c in CALLS)
    assert any((c.defer_key or "").startswith("sha256:") for c in CALLS)
    assert any(c.defer_key == "" for c in CALLS)
    assert {(c.leading, c.keep) for c in CALLS} == {
        (False, "last"), (True, "last"), (False, "first"), (True, "first")}
    assert {c.collect for c in CALLS} >= {None, (1000, 131072), (2, 99)}
    assert {c.if_running for c in CALLS} == {"concurrent", "after"}


@pytest.mark.parametrize("call", CALLS, ids=lambda c: f"{c.task}-{c.defer_key}")
def test_calls_the_code_builds_match_the_call_schema(call: Call) -> None:
    record = json.loads(dumps(call.to_dict()))
    assert_valid("call", record)
    assert_valid("call", record, "call")
    assert not validator("call", "control").is_valid(record)
    assert set(record) <= declared("call", "call")
    assert call_from_dict(record) == call
    for value in [*record["args"], *record["kwargs"].values()]:
        assert_valid("call", value, "encodedValue")
    assert call.key == (call.id if call.defer_key is None else f"{call.task}|{call.defer_key}")


def test_the_argument_encoding_of_every_supported_type_matches_encoded_value() -> None:
    values = [
        None, True, 1, -2.5, "text", [1, [2]], (1, 2), {"plain": 1, "$a": 2}, {},
        dt.datetime(2026, 11, 24, 3, 43, 14, 123456, tzinfo=dt.timezone.utc),
        dt.datetime(2026, 11, 24, 3, 43), dt.date(2026, 11, 24), uuid.uuid4(),
        decimal.Decimal("12.50"), decimal.Decimal("-1E+3"), decimal.Decimal("NaN"),
        decimal.Decimal("-Infinity"), b"", b"\x00", b"\x00\x01", b"\x00\x01\x02",
        {"$ref": 1}, {"$dict": {"$x": 1}}, {"$datetime": "not a date"},
        {"outer": {"$uuid": uuid.UUID(int=1)}},
    ]
    for value in values:
        encoded = json.loads(dumps(to_json_value(value)))
        assert_valid("call", encoded, "encodedValue")


offsets = st.integers(-1439, 1439).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))


@given(st.decimals(allow_nan=True, allow_infinity=True) | st.binary(max_size=20)
       | st.uuids() | st.dates() | st.datetimes(timezones=st.none() | offsets))
@settings(max_examples=200, deadline=None)
def test_any_encoded_special_value_matches_encoded_value(value: Any) -> None:
    assert_valid("call", json.loads(dumps(to_json_value(value))), "encodedValue")


@pytest.mark.parametrize("value", [
    {"$decimal": 5}, {"$decimal": "abc"}, {"$uuid": 5}, {"$bytes": "!!"}, {"$date": 20260101},
    {"$dict": [1]}, {"$dict": 5}, {"$unknown": 1}, {"$datetime": None},
])
def test_malformed_tagged_values_do_not_match_encoded_value(value: Any) -> None:
    assert not validator("call", "encodedValue").is_valid(value)
    assert not validator("call", "encodedValue").is_valid([value])


def test_executions_match_the_execution_schema_only() -> None:
    runs = [dataclasses.replace(c, collected=[c.args[0], c.args[0]]) for c in CALLS if c.collect]
    assert runs
    for call in CALLS + runs:
        record = json.loads(dumps(FiredCall(call=call, due_ms=NOW + 5, fired_ms=NOW + 7).to_dict()))
        assert_valid("execution", record)
        assert set(record) <= declared("execution")
        assert execution_from_dict(record).call == call
        assert_invalid("call", record)  # kind "execution" is not for the calls topic


def test_control_records_match_the_call_schema() -> None:
    records = [Control("tick", ID).to_dict(), Control("cancel", ID).to_dict(),
               Control("cancel", ID, reason="user left").to_dict(),
               Control("finished", ID).to_dict(), Control("finished", ID, attempt=3).to_dict()]
    for record in records:
        assert_valid("call", record)
        assert_valid("call", record, "control")
        assert set(record) <= declared("call", "control")
        assert control_from_dict(record).id == ID
        assert_invalid("execution", record)
    assert records[-1]["attempt"] == 3 and "attempt" in records[-2]


# -- events the scheduling rules and the worker's outcomes produce ------------------------------


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
    kept = rules.accept(pending.slot, dataclasses.replace(make("d", NOW + 5), keep="first"),
                        NOW + 5, 60_000)
    lead = rules.accept(None, dataclasses.replace(make("e", NOW), leading=True), NOW, 60_000)
    assert lead.executions
    gathered = rules.accept(None, dataclasses.replace(make("f", NOW), collect=(5, 99)), NOW, 0)
    gathered = rules.accept(gathered.slot, dataclasses.replace(make("g", NOW + 1),
                                                               collect=(5, 99)), NOW + 1, 0)
    # if_running="after": "h" fires at once and runs; "i" is held until it finishes.
    running = rules.accept(None, dataclasses.replace(make("h", NOW, delay=0),
                                                     if_running="after"), NOW, 60_000)
    held = rules.accept(running.slot, dataclasses.replace(make("i", NOW + 1),
                                                          if_running="after"), NOW + 1, 60_000)
    assert running.executions and held.events[-1]["after"] == "h"
    for decision in (first, second, late, fired, after, at_once, pending, cancelled, default,
                     retried, replaced, kept, lead, gathered, running, held):
        out += decision.events
    assert fired.executions and at_once.executions
    return out


def outcome_events() -> list[dict[str, Any]]:
    """Outcomes of cfstream.worker.execute wrapped with wire.event the way runner.py does."""
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


def check_event(record: dict[str, Any]) -> None:
    record = json.loads(dumps(record))
    assert_valid("event", record)
    assert_valid("event", record, record["type"])
    assert set(record) <= declared("event", record["type"]), record


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


# -- a processor partition, driven in memory -------------------------------------------------------


def test_processor_records_match_the_schemas(partition_task: Any) -> None:
    task: PartitionTask = partition_task("schemas")
    outputs = task.outputs
    now = int(time.time() * 1000)

    def make(submitted: int, delay: int = 30, key: str | None = "k") -> Call:
        return Call(id=new_execution_id(submitted), task="tests.schemas:notify",
                    args=[{"$date": "2026-01-01"}], kwargs={}, submitted_ms=submitted,
                    delay_ms=delay, defer_key=key, max_wait_ms=None)

    first, second, old = make(now), make(now + 1), make(now - 1)
    at_once, to_cancel = make(now, delay=0, key=None), make(now, delay=60_000, key="other")
    cancel = Control("cancel", to_cancel.id, reason="user left")

    def turn(records: list[tuple[bytes, Any]], at: int) -> None:
        for key, value in records:
            raw = value if isinstance(value, bytes) or value is None else dumps(value)
            task.process(key, raw, task.position, None, at)
        task.horizon_ms = at
        task.fire_read(at)
        task.fire_due(at)
        task.stage()
        task.write(task.position)

    turn([(c.key.encode(), c.to_dict()) for c in (first, second, old, at_once, to_cancel)], now)
    turn([(to_cancel.key.encode(), cancel.to_dict())], now)
    turn([], now + 100)  # second is due
    bad = [
        (b"x", b"{not json"),
        (b"x", b"[1, 2]"),
        (b"x", {"v": 2, "id": "x"}),
        (b"x", {**first.to_dict(), "id": "x", "task": "a|b"}),
        (b"wrong", {**first.to_dict(), "id": "y"}),
        (b"x", {"v": 1, "kind": "pause", "id": "z"}),
        (b"x", None),
    ]
    turn(bad, now + 100)

    conf = task.settings
    executions = outputs.values(conf.executions_topic)
    assert [e["id"] for e in executions] == [at_once.id, second.id]
    for item, record in zip(outputs.of(conf.executions_topic), executions, strict=True):
        assert_valid("execution", record)
        assert item["key"] == execution_from_dict(record).call.key.encode()
    events = outputs.values(conf.events_topic)
    for item, record in zip(outputs.of(conf.events_topic), events, strict=True):
        check_event(record)
        assert item["key"] == (record["id"] or "invalid").encode()
    types = [(e["type"], e.get("reason")) for e in events]
    for expected in [("scheduled", None), ("deferred", "replaced"), ("deferred", "out_of_order"),
                     ("cancelled", "user left"), ("invalid", None)]:
        assert any(t == expected[0] and (expected[1] is None or r == expected[1])
                   for t, r in types), expected
    invalid = [e for e in events if e["type"] == "invalid"]
    assert len(invalid) == 7
    assert {e["id"] for e in invalid} == {None, "x", "y", "z"}
    assert len(outputs.of(conf.dead_letter_topic)) == 7
    for sent in outputs.of(conf.dead_letter_topic):
        headers = dict(sent["headers"])
        assert set(headers) == {"cfstream-reason", "cfstream-source"}
        assert re.fullmatch(rb"schemas\.calls:0:\d+", headers["cfstream-source"])
    slots = {state.slot_key(c.key.encode()) for c in (first, at_once, to_cancel)}
    assert slots <= set(task.db.keys())
    # Every slot write, and only those, went to the changelog; the due index stays local.
    changelog = outputs.of("changelog")
    assert slots <= {item["key"] for item in changelog}
    assert all(item["key"].startswith(state.SLOT_PREFIX) for item in changelog)


# -- a worker, driven in memory -------------------------------------------------------------------


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.headers: list[list[tuple[str, bytes]] | None] = []

    def produce(self, topic: str, key: bytes, value: bytes, on_delivery: Any = None,
                headers: list[tuple[str, bytes]] | None = None) -> None:
        self.sent.append((topic, key, value))
        self.headers.append(headers)
        if on_delivery is not None:
            on_delivery(None, None)

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        return 0


class FakeMessage:
    def __init__(self, value: bytes | None, offset: int, key: bytes = b"k") -> None:
        self._value, self._offset, self._key = value, offset, key

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "schemas.executions"

    def key(self) -> bytes:
        return self._key

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value


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


@pytest.fixture
def worker() -> Iterator[Worker]:
    tasks = {t.name: t for t in [Task(fn=ok, name="tests.schemas:ok"),
                                  Task(fn=boom, name="tests.schemas:boom"),
                                  Task(fn=unjsonable, name="tests.schemas:unjsonable"),
                                  Task(fn=async_ok, name="tests.schemas:async_ok")]}
    instance = Worker(Settings(worker_concurrency=3), tasks)
    instance.producer = FakeProducer()  # type: ignore[assignment]
    loop = threading.Thread(target=instance.loop.run_forever, daemon=True)
    loop.start()
    try:
        yield instance
    finally:
        instance.pool.shutdown(wait=True)
        instance.loop.call_soon_threadsafe(instance.loop.stop)
        loop.join(5)
        instance.loop.close()


def test_worker_records_match_the_event_schema(worker: Worker) -> None:
    def execution(task: str, args: list[Any], key: str | None = None, at: int = NOW) -> FiredCall:
        call = Call(id=new_execution_id(at), task=task, args=args, kwargs={}, submitted_ms=at,
                    defer_key=key)
        return FiredCall(call=call, due_ms=at, fired_ms=at + 2)

    when = to_json_value(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    executions = [
        execution("tests.schemas:ok", [1, when]),
        execution("tests.schemas:boom", []),
        execution("tests.schemas:unjsonable", []),
        execution("tests.schemas:async_ok", [3]),
        execution("tests.schemas:missing", []),
        execution("tests.schemas:ok", ["too", "many", "args"]),
        execution("tests.schemas:ok", [1, when], key="same", at=NOW),
        execution("tests.schemas:ok", [2, when], key="same", at=NOW + 1),
    ]
    for offset, item in enumerate(executions):
        worker._take(FakeMessage(dumps(item.to_dict()), offset))  # type: ignore[arg-type]
    producer: FakeProducer = worker.producer  # type: ignore[assignment]

    def outcomes() -> list[dict[str, Any]]:
        return [json.loads(value) for _, _, value in producer.sent]

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        worker._start_ready()
        worker._report_outcomes(block=0.05)
        done = [e for e in outcomes() if e["type"] in ("succeeded", "failed", "deferred")]
        if len(done) == len(executions):
            break
    events = outcomes()
    assert len([e for e in events if e["type"] != "started"]) == len(executions), events
    for (topic, key, _), record in zip(producer.sent, events, strict=True):
        assert topic == worker.settings.events_topic
        assert key == record["id"].encode()
        check_event(record)
    by_type = {e["type"] for e in events}
    assert by_type == {"started", "succeeded", "failed", "deferred"}
    errors = {e["error"]["type"] for e in events if e["type"] == "failed"}
    assert errors == {f"{__name__}.TaskError", "ResultNotSerializable", "TaskNotRegistered",
                      "InvalidArguments"}
    deferred = [e for e in events if e["type"] == "deferred"]
    assert [(e["reason"], e["successor"]) for e in deferred] == [
        ("backlog", executions[-1].call.id)]


def test_worker_finished_records_match_the_call_schema(worker: Worker) -> None:
    """if_running="after": once an execution's outcome is out, the worker tells the processor
    that the key's run ended, on the calls topic with the call's key."""
    when = to_json_value(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    calls = [Call(id=new_execution_id(NOW + i), task=task, args=args, kwargs={},
                  submitted_ms=NOW + i, delay_ms=5, defer_key=f"key:{i}", if_running="after")
             for i, (task, args) in enumerate([("tests.schemas:ok", [1, when]),
                                               ("tests.schemas:boom", [])])]
    for offset, call in enumerate(calls):
        record = dumps(FiredCall(call=call, due_ms=NOW + 5, fired_ms=NOW + 7).to_dict())
        worker._take(FakeMessage(record, offset, call.key.encode()))  # type: ignore[arg-type]
    producer: FakeProducer = worker.producer  # type: ignore[assignment]
    calls_topic = worker.settings.calls_topic

    def finished() -> list[tuple[bytes, dict[str, Any]]]:
        return [(key, json.loads(value)) for topic, key, value in producer.sent
                if topic == calls_topic]

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(finished()) < len(calls):
        worker._start_ready()
        worker._report_outcomes(block=0.05)
    by_id = {c.id: c for c in calls}
    assert sorted(r["id"] for _, r in finished()) == sorted(by_id)
    for key, record in finished():
        assert_valid("call", record)
        assert_valid("call", record, "control")
        assert set(record) <= declared("call", "control")
        assert processor_accepts(dumps(record))
        assert record == {"v": 1, "kind": "finished", "id": record["id"], "attempt": 1}
        assert key == by_id[record["id"]].key.encode()
    order = [(topic, json.loads(value)) for topic, _, value in producer.sent]
    for call in calls:
        ended = next(i for i, (topic, r) in enumerate(order)
                     if topic == worker.settings.events_topic and r["id"] == call.id
                     and r["type"] in ("succeeded", "failed"))
        said = next(i for i, (topic, r) in enumerate(order)
                    if topic == calls_topic and r["id"] == call.id)
        assert ended < said


def test_worker_invalid_records_match_the_event_schema(worker: Worker) -> None:
    records = [b"{not json", b"[]", None, dumps({**FiredCall(call=CALLS[0], due_ms=NOW,
                                                             fired_ms=NOW).to_dict(),
                                                 "fired_ms": "late"})]
    for offset, raw in enumerate(records):
        worker._take(FakeMessage(raw, offset))  # type: ignore[arg-type]
    producer: FakeProducer = worker.producer  # type: ignore[assignment]
    events = [(key, json.loads(value)) for topic, key, value in producer.sent
              if topic == worker.settings.events_topic]
    letters = [headers for (topic, _, _), headers in zip(producer.sent, producer.headers,
                                                         strict=True)
               if topic == worker.settings.dead_letter_topic]
    assert len(events) == len(letters) == len(records)
    for key, record in events:
        check_event(record)
        # As the processor's: keyed by the record's id when it has one, so its waiters learn.
        assert record["type"] == "invalid" and key == (record["id"] or "invalid").encode()
    assert [record["id"] for _, record in events] == [None, None, None, CALLS[0].id]
    for headers in letters:
        assert headers is not None
        assert {name for name, _ in headers} == {"cfstream-reason", "cfstream-source"}


# -- the calls-topic schema accepts exactly what the processor accepts --------------------------


def processor_accepts(raw: bytes) -> bool:
    """The processor's reading of a calls-topic record (app.Processor._apply), minus the
    clock-skew check, the key check and the size limit."""
    try:
        data = parse_json(raw, BIG)
        if data.get("kind", "call") == "call":
            call_from_dict(data)
        else:
            control_from_dict(data)
    except InvalidRecord:
        return False
    return True


def worker_accepts(raw: bytes) -> bool:
    """The worker's reading of an executions-topic record (runner.Worker._take)."""
    try:
        execution_from_dict(parse_json(raw, BIG))
    except InvalidRecord:
        return False
    return True


def without_known_differences(data: Any, execution: bool = False) -> Any:
    """``data`` with ``kind`` set for executions (the worker does not look at it)."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    if execution:
        out["kind"] = "execution"
    return out


def check_agreement(record: Any, schema: str = "call") -> bool:
    accepts = processor_accepts if schema == "call" else worker_accepts
    raw = json.dumps(record).encode()
    data = json.loads(raw)
    code_ok, schema_ok = accepts(raw), validator(schema).is_valid(data)
    fixed = without_known_differences(data, execution=schema == "execution")
    fixed_code_ok = accepts(json.dumps(fixed).encode())
    assert validator(schema).is_valid(fixed) == fixed_code_ok, (
        f"{schema} schema {'accepts' if not fixed_code_ok else 'rejects'} {fixed!r}, "
        f"the code {'accepts' if fixed_code_ok else 'rejects'} it")
    if code_ok != schema_ok:
        assert json.dumps(fixed) != json.dumps(data), f"unexplained difference on {data!r}"
    return code_ok


BASE = {"v": 1, "id": ID, "task": "app.tasks:notify", "submitted_ms": NOW}
FULL = {**BASE, "kind": "call", "args": [1, {"$date": "2026-01-01"}], "kwargs": {"x": 2},
        "delay_ms": 60_000, "defer_key": "[1,2]", "max_wait_ms": 600_000}
TICK = {"v": 1, "kind": "tick", "id": ID, "due_ms": NOW}
COLLECT = {"max_calls": 10, "max_bytes": 1_000}
CANCEL = {"v": 1, "kind": "cancel", "id": ID, "reason": "user left"}
FINISHED = {"v": 1, "kind": "finished", "id": ID, "attempt": 1}


def drop(record: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != name}


CASES: list[tuple[str, Any, bool]] = [
    ("minimal", BASE, True),
    ("full", FULL, True),
    ("no kind", drop(FULL, "kind"), True),
    ("nulls mean defaults", {**BASE, "args": None, "kwargs": None, "delay_ms": None,
                             "defer_key": None, "max_wait_ms": None}, True),
    ("empty defer key", {**BASE, "defer_key": ""}, True),
    ("unknown field", {**FULL, "colour": "blue"}, True),
    ("zero and max durations", {**FULL, "delay_ms": 0, "max_wait_ms": MAX_DELAY_MS}, True),
    ("v 1.0", {**BASE, "v": 1.0}, True),
    ("v 2", {**BASE, "v": 2}, True),
    ("leading", {**FULL, "v": 2, "leading": True}, True),
    ("keep first", {**FULL, "v": 2, "keep": "first"}, True),
    ("both modes", {**FULL, "leading": True, "keep": "first"}, True),
    ("default modes", {**BASE, "leading": False, "keep": "last"}, True),
    ("null modes", {**BASE, "leading": None, "keep": None, "collect": None}, True),
    ("collect", {**FULL, "args": [[1]], "kwargs": None, "collect": COLLECT}, True),
    ("collect with leading and empty kwargs", {**FULL, "args": [{"a": 1}], "kwargs": {},
                                               "collect": COLLECT, "leading": True}, True),
    ("collect with integral floats", {**FULL, "args": [1], "kwargs": {},
                                      "collect": {"max_calls": 2.0, "max_bytes": 9.0}}, True),
    ("collect ignores other keys", {**FULL, "args": [1], "kwargs": {},
                                    "collect": {**COLLECT, "colour": "blue"}}, True),
    ("integral float duration", {**BASE, "delay_ms": 5.0}, True),
    ("tick", TICK, True),
    ("tick without due_ms", drop(TICK, "due_ms"), True),
    ("tick with any due_ms", {**TICK, "due_ms": "soon"}, True),
    ("cancel", CANCEL, True),
    ("cancel without reason", drop(CANCEL, "reason"), True),
    ("cancel with null reason", {**CANCEL, "reason": None}, True),
    ("control with empty id", {**CANCEL, "id": ""}, True),
    ("if_running after", {**FULL, "v": 2, "if_running": "after"}, True),
    ("if_running concurrent", {**FULL, "if_running": "concurrent"}, True),
    ("null if_running", {**BASE, "if_running": None}, True),
    ("if_running after with leading and keep first", {**FULL, "v": 2, "if_running": "after",
                                                      "leading": True, "keep": "first"}, True),
    ("if_running after with null collect", {**FULL, "if_running": "after", "collect": None},
     True),
    ("collect with if_running concurrent", {**FULL, "args": [1], "kwargs": {},
                                            "collect": COLLECT, "if_running": "concurrent"},
     True),
    ("finished", FINISHED, True),
    ("finished of a retry", {**FINISHED, "attempt": 3}, True),
    ("finished with a whole float attempt", {**FINISHED, "attempt": 2.0}, True),
    ("finished with a reason", {**FINISHED, "reason": None}, True),
    ("cancel ignores attempt", {**CANCEL, "attempt": 0}, True),
    ("tick ignores attempt", {**TICK, "attempt": "first"}, True),
    ("not an object", [BASE], False),
    ("null", None, False),
    ("missing v", drop(BASE, "v"), False),
    ("v 3", {**BASE, "v": 3}, False),
    ("leading without defer_key", {**BASE, "leading": True}, False),
    ("keep first without defer_key", {**BASE, "keep": "first"}, False),
    ("leading not a boolean", {**FULL, "leading": 1}, False),
    ("leading a string", {**FULL, "leading": "true"}, False),
    ("keep unknown", {**FULL, "keep": "middle"}, False),
    ("keep empty", {**FULL, "keep": ""}, False),
    ("keep a boolean", {**FULL, "keep": True}, False),
    ("collect without defer_key", {**BASE, "args": [1], "collect": COLLECT}, False),
    ("collect with keep first", {**FULL, "args": [1], "kwargs": {}, "collect": COLLECT,
                                 "keep": "first"}, False),
    ("collect of two arguments", {**FULL, "args": [1, 2], "kwargs": {}, "collect": COLLECT},
     False),
    ("collect without arguments", {**FULL, "args": [], "kwargs": {}, "collect": COLLECT},
     False),
    ("collect without args", {**drop(FULL, "args"), "kwargs": {}, "collect": COLLECT}, False),
    ("collect with kwargs", {**FULL, "args": [1], "collect": COLLECT}, False),
    ("collect of zero calls", {**FULL, "args": [1], "kwargs": {},
                               "collect": {**COLLECT, "max_calls": 0}}, False),
    ("collect over the byte limit", {**FULL, "args": [1], "kwargs": {},
                                     "collect": {**COLLECT, "max_bytes": 200_001}}, False),
    ("collect without max_bytes", {**FULL, "args": [1], "kwargs": {},
                                   "collect": {"max_calls": 3}}, False),
    ("collect boolean bound", {**FULL, "args": [1], "kwargs": {},
                               "collect": {**COLLECT, "max_calls": True}}, False),
    ("collect true", {**FULL, "args": [1], "kwargs": {}, "collect": True}, False),
    ("if_running after without defer_key", {**BASE, "if_running": "after"}, False),
    ("if_running after with null defer_key", {**BASE, "if_running": "after",
                                              "defer_key": None}, False),
    ("if_running after with collect", {**FULL, "args": [1], "kwargs": {}, "collect": COLLECT,
                                       "if_running": "after"}, False),
    ("if_running unknown", {**FULL, "if_running": "later"}, False),
    ("if_running empty", {**FULL, "if_running": ""}, False),
    ("if_running a boolean", {**FULL, "if_running": True}, False),
    ("if_running an array", {**FULL, "if_running": ["after"]}, False),
    ("finished without attempt", drop(FINISHED, "attempt"), False),
    ("finished with null attempt", {**FINISHED, "attempt": None}, False),
    ("finished of attempt 0", {**FINISHED, "attempt": 0}, False),
    ("finished of a negative attempt", {**FINISHED, "attempt": -1}, False),
    ("finished with a string attempt", {**FINISHED, "attempt": "1"}, False),
    ("finished with a boolean attempt", {**FINISHED, "attempt": True}, False),
    ("finished with a fractional attempt", {**FINISHED, "attempt": 1.5}, False),
    ("finished without id", drop(FINISHED, "id"), False),
    ("v string", {**BASE, "v": "1"}, False),
    ("missing id", drop(BASE, "id"), False),
    ("null id", {**BASE, "id": None}, False),
    ("empty id", {**BASE, "id": ""}, False),
    ("numeric id", {**BASE, "id": 5}, False),
    ("missing task", drop(BASE, "task"), False),
    ("empty task", {**BASE, "task": ""}, False),
    ("pipe in task", {**BASE, "task": "app|notify"}, False),
    ("pipe alone", {**BASE, "task": "|"}, False),
    ("boolean task", {**BASE, "task": True}, False),
    ("missing submitted_ms", drop(BASE, "submitted_ms"), False),
    ("string submitted_ms", {**BASE, "submitted_ms": str(NOW)}, False),
    ("boolean submitted_ms", {**BASE, "submitted_ms": True}, False),
    ("fractional submitted_ms", {**BASE, "submitted_ms": NOW + 0.5}, False),
    ("negative delay", {**BASE, "delay_ms": -1}, False),
    ("delay over ten years", {**BASE, "delay_ms": MAX_DELAY_MS + 1}, False),
    ("boolean delay", {**BASE, "delay_ms": True}, False),
    ("string delay", {**BASE, "delay_ms": "5"}, False),
    ("negative fractional delay", {**BASE, "delay_ms": -0.5}, False),
    ("max_wait without defer_key", {**BASE, "max_wait_ms": 10}, False),
    ("max_wait with null defer_key", {**BASE, "max_wait_ms": 10, "defer_key": None}, False),
    ("zero max_wait without defer_key", {**BASE, "max_wait_ms": 0}, False),
    ("negative max_wait", {**FULL, "max_wait_ms": -5}, False),
    ("boolean max_wait", {**FULL, "max_wait_ms": False}, False),
    ("numeric defer_key", {**BASE, "defer_key": 5}, False),
    ("boolean defer_key", {**BASE, "defer_key": True}, False),
    ("args object", {**BASE, "args": {"a": 1}}, False),
    ("args string", {**BASE, "args": "1,2"}, False),
    ("args boolean", {**BASE, "args": True}, False),
    ("kwargs array", {**BASE, "kwargs": [1]}, False),
    ("kwargs boolean", {**BASE, "kwargs": False}, False),
    ("kind execution", {**BASE, "kind": "execution"}, False),
    ("kind null", {**BASE, "kind": None}, False),
    ("unknown kind", {**BASE, "kind": "pause"}, False),
    ("control without v", drop(TICK, "v"), False),
    ("control without id", drop(CANCEL, "id"), False),
    ("control with null id", {**CANCEL, "id": None}, False),
    ("control with numeric id", {**CANCEL, "id": 7}, False),
    ("control with boolean id", {**CANCEL, "id": True}, False),
    ("control with numeric reason", {**CANCEL, "reason": 7}, False),
]


@pytest.mark.parametrize(("record", "expected"), [(r, e) for _, r, e in CASES],
                         ids=[name for name, _, _ in CASES])
def test_schema_and_processor_agree_on_examples(record: Any, expected: bool) -> None:
    raw = json.dumps(record).encode()
    assert processor_accepts(raw) is expected
    assert validator("call").is_valid(record) is expected
    check_agreement(record)


json_leaves = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
               | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6))
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=6,
)
edge_values = st.sampled_from([
    None, True, False, 0, 1, -1, 2, 0.0, -0.0, 1.0, 0.5, -0.5, 2.5, 1e300, -1e300,
    MAX_DELAY_MS, MAX_DELAY_MS + 1, MAX_DELAY_MS - 0.5, MAX_DELAY_MS + 0.5, float(MAX_DELAY_MS),
    NOW, float(NOW), NOW + 0.25, "", "|", "a|b", "app.tasks:x", "5", [], [1], {}, {"a": 1},
    "call", "tick", "cancel", "finished", "execution", "first", "last", "after", "concurrent",
])
any_values = edge_values | json_values
durations = st.none() | st.integers(0, MAX_DELAY_MS) | st.sampled_from([0, 1, MAX_DELAY_MS])
names = st.text(min_size=1, max_size=10).filter(lambda s: "|" not in s) | st.sampled_from(
    ["app.tasks:notify", "m:f"])
ids = st.text(min_size=1, max_size=8) | st.uuids().map(str)
FIELDS = ["v", "kind", "id", "task", "args", "kwargs", "submitted_ms", "delay_ms", "defer_key",
          "max_wait_ms", "leading", "keep", "collect", "if_running", "attempt", "reason", "due_ms",
          "fired_ms", "other"]


@st.composite
def valid_calls(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {"v": 1, "id": draw(ids), "task": draw(names),
                              "submitted_ms": draw(st.integers(-(2**50), 2**50))}
    if draw(st.booleans()):
        record["kind"] = "call"
    optional = {
        "args": st.none() | st.lists(json_values, max_size=3),
        "kwargs": st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=3),
        "delay_ms": durations,
        "defer_key": st.none() | st.text(max_size=8),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            record[name] = draw(strategy)
    if record.get("defer_key") is not None and draw(st.booleans()):
        record["max_wait_ms"] = draw(durations)
    if record.get("defer_key") is not None and draw(st.booleans()):
        record["leading"] = draw(st.none() | st.booleans())
        record["keep"] = draw(st.none() | st.sampled_from(["last", "first"]))
    if record.get("defer_key") is not None and record.get("keep") != "first" and draw(
            st.booleans()):  # bounds far above what the generated arguments weigh
        record.update(args=[draw(json_values)], kwargs=draw(st.none() | st.just({})),
                      collect={"max_calls": draw(st.integers(1, 10_000)),
                               "max_bytes": draw(st.integers(10_000, 200_000))})
    if record.get("defer_key") is not None and draw(st.booleans()):
        modes = ["concurrent"] if "collect" in record else ["concurrent", "after"]
        record["if_running"] = draw(st.none() | st.sampled_from(modes))
    if draw(st.booleans()):
        record["v"] = 2
    return record


@st.composite
def valid_controls(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {"v": 1,
                              "kind": draw(st.sampled_from(["tick", "cancel", "finished"])),
                              "id": draw(st.text(max_size=8))}
    if record["kind"] == "finished":
        record["attempt"] = draw(st.integers(1, 2**40))
    if draw(st.booleans()):
        record["reason"] = draw(st.none() | st.text(max_size=8))
    if draw(st.booleans()):
        record["due_ms"] = draw(any_values)
    return record


@st.composite
def valid_executions(draw: st.DrawFn) -> dict[str, Any]:
    record = draw(valid_calls())
    record.update(kind="execution", due_ms=draw(st.integers(-(2**50), 2**50)),
                  fired_ms=draw(st.integers(-(2**50), 2**50)))
    return record


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A valid record, then up to three fields dropped or replaced by anything."""
    record = draw(base)
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(FIELDS))
        if draw(st.booleans()):
            record.pop(name, None)
        else:
            record[name] = draw(any_values)
    return record


@given(mutated(valid_calls() | valid_controls()))
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_call_schema_accepts_what_the_processor_accepts(record: dict[str, Any]) -> None:
    check_agreement(record)


@given(valid_calls() | valid_controls())
@settings(max_examples=300, deadline=None)
def test_valid_generated_records_are_accepted(record: dict[str, Any]) -> None:
    assert check_agreement(record)
    assert validator("call").is_valid(record)


@given(mutated(valid_executions()))
@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_execution_schema_accepts_what_the_worker_accepts(record: dict[str, Any]) -> None:
    check_agreement(record, "execution")


# -- the documentation ------------------------------------------------------------------------


def doc_examples() -> list[dict[str, Any]]:
    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text("utf-8"), flags=re.S)
    return [json.loads(block) for block in blocks]


def test_doc_examples_match_the_schemas() -> None:
    examples = doc_examples()
    assert len(examples) >= 10
    seen = set()
    for record in examples:
        if "type" in record:
            check_event(record)
            seen.add(record["type"])
        elif record.get("kind") == "execution":
            assert_valid("execution", record)
            assert worker_accepts(dumps(record))
            seen.add("execution")
        else:
            assert_valid("call", record)
            assert processor_accepts(dumps(record))
            seen.add(record.get("kind", "call"))
    assert seen == {"call", "tick", "cancel", "finished", "execution", *EVENT_TYPES}


def java_murmur2(data: bytes) -> int:
    """Kafka's Utils.murmur2, as the doc spells it out."""
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    whole = len(data) - len(data) % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = data[whole:]
    if rest:
        for i in reversed(range(len(rest))):
            h ^= rest[i] << (8 * i)
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def test_doc_partition_vectors_are_what_murmur2_gives() -> None:
    rows = re.findall(r"^\| `([^`]+)` \| (\d+) \| (\d+) \|$", DOC.read_text("utf-8"), flags=re.M)
    assert len(rows) >= 4
    for escaped, partitions, partition in rows:
        key = escaped.replace("\\|", "|")  # a Markdown table escape
        assert murmur2(key.encode(), int(partitions)) == int(partition), key
        assert (java_murmur2(key.encode()) & 0x7FFFFFFF) % int(partitions) == int(partition)


@given(st.binary(max_size=40), st.integers(1, 64))
def test_the_documented_murmur2_is_the_one_the_client_uses(key: bytes, partitions: int) -> None:
    assert (java_murmur2(key) & 0x7FFFFFFF) % partitions == murmur2(key, partitions)


# -- once differences between code and schema (fixed): each states the intended behaviour ----


def test_a_boolean_version_is_rejected() -> None:
    assert not processor_accepts(json.dumps({**BASE, "v": True}).encode())


@pytest.mark.parametrize("name", ["delay_ms", "max_wait_ms"])
def test_a_fractional_duration_is_read_like_the_schema_reads_it(name: str) -> None:
    record = {**FULL, name: 1.5}
    assert processor_accepts(json.dumps(record).encode()) == validator("call").is_valid(record)


def test_an_integral_float_time_is_read_like_the_schema_reads_it() -> None:
    record = {**BASE, "submitted_ms": float(NOW)}
    assert processor_accepts(json.dumps(record).encode()) == validator("call").is_valid(record)


def test_a_huge_integer_duration_is_an_invalid_record() -> None:
    with pytest.raises(InvalidRecord):
        call_from_dict({**BASE, "delay_ms": 10**400})


def test_deeply_nested_json_is_an_invalid_record() -> None:
    deep = b'{"v": 1, "args": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(InvalidRecord):
        parse_json(deep, BIG)


@pytest.mark.parametrize("value", [{"$decimal": "abc"}, {"$uuid": 5}, {"$dict": [1]}])
def test_a_malformed_tagged_argument_fails_the_execution(value: Any) -> None:
    call = Call(id=ID, task="tests.schemas:ok", args=[value, value], kwargs={},
                submitted_ms=NOW)
    _, ready = execute.prepare(Task(fn=ok, name=call.task), call)
    assert ready is not None and ready.fields["error"]["type"] == "InvalidArguments"
