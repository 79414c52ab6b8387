"""The calls-topic schema accepts a record iff the processor does (apart from the clock-skew
check, the record key and the size limit), and the execution schema iff the worker does.
The tests at the end pin the places where code and schema once differed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schema_checks import BIG, ID, NOW, processor_accepts, validator, worker_accepts

from cfstream.wire import (
    MAX_DELAY_MS,
    InvalidRecord,
    call_from_dict,
    parse_json,
)


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


@pytest.mark.parametrize("value", [
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "not a traceparent", 7, None,
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}])
@pytest.mark.parametrize("schema", ["call", "execution"])
def test_any_traceparent_is_accepted_by_both_a_bad_one_is_ignored(value: Any, schema: str) -> None:
    base = FULL if schema == "call" else {**FULL, "kind": "execution", "due_ms": NOW, "fired_ms": NOW}
    record = {**base, "traceparent": value}
    assert check_agreement(record, schema)
    assert validator(schema).is_valid(record)
