"""The records cfstream puts on Kafka (cfstream.wire)."""

from __future__ import annotations

import json
from typing import Any

import pytest

import cfstream as cf
from cfstream.codec import dumps
from cfstream.wire import (
    MAX_CLOCK_SKEW_MS,
    MAX_DELAY_MS,
    NO_MODES,
    Call,
    Collect,
    Control,
    FiredCall,
    InvalidRecord,
    Modes,
    call_from_dict,
    control_from_dict,
    dead_letter,
    event,
    execution_from_dict,
    parse_json,
    trusted_call,
)

NOW = 1_700_000_000_000
LIMIT = 1_000_000


def call_dict(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "v": 1, "kind": "call", "id": "0190a5b2-0000-7000-8000-000000000001",
        "task": "app.tasks:notify", "args": [1, {"$date": "2026-01-01"}], "kwargs": {"x": 2},
        "submitted_ms": NOW, "delay_ms": 60_000, "defer_key": "[1,2]", "max_wait_ms": 600_000,
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not ...}


def parse_call(data: dict[str, Any] | bytes, now_ms: int | None = None) -> Call:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return call_from_dict(parse_json(raw, LIMIT), now_ms=now_ms)


def reason(data: dict[str, Any] | bytes, now_ms: int | None = None, limit: int = LIMIT) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    with pytest.raises(InvalidRecord) as info:
        call_from_dict(parse_json(raw, limit), now_ms=now_ms)
    assert str(info.value) == info.value.reason
    return info.value.reason


# -- Call.key -------------------------------------------------------------------------------


def test_deferred_call_key_is_the_defer_key_scoped_by_task() -> None:
    call = Call(id="e1", task="app:notify", args=[], kwargs={}, submitted_ms=0,
                defer_key="#1:#2")
    assert call.key == "app:notify|#1:#2"


def test_same_defer_key_of_different_tasks_gives_different_keys() -> None:
    a = Call(id="e1", task="app:a", args=[], kwargs={}, submitted_ms=0, defer_key="k")
    b = Call(id="e2", task="app:b", args=[], kwargs={}, submitted_ms=0, defer_key="k")
    assert a.key != b.key


def test_call_that_is_not_deferred_is_keyed_by_its_id() -> None:
    call = Call(id="e1", task="app:notify", args=[], kwargs={}, submitted_ms=0)
    assert call.key == "e1"


# -- round trips ----------------------------------------------------------------------------


def test_call_round_trips_through_bytes() -> None:
    call = Call(id="e1", task="app:notify", args=[1, "a", None], kwargs={"d": {"$date": "2026-01-01"}},
                submitted_ms=NOW, delay_ms=5_000, defer_key="k", max_wait_ms=60_000)
    data = call.to_dict()
    assert data["v"] == 1 and data["kind"] == "call"
    assert call_from_dict(parse_json(dumps(data), LIMIT), now_ms=NOW) == call


def test_minimal_call_round_trips_with_defaults() -> None:
    call = Call(id="e1", task="t", args=[], kwargs={}, submitted_ms=0)
    assert call_from_dict(call.to_dict()) == call
    assert parse_call({"v": 1, "id": "e1", "task": "t", "submitted_ms": 0}) == call


def test_a_fractional_delay_is_rejected_and_an_integral_float_is_read() -> None:
    assert reason(call_dict(delay_ms=1.9)) == (
        "field 'delay_ms' must be whole milliseconds (an integer), got 1.9")
    assert parse_call(call_dict(delay_ms=2.0)).delay_ms == 2


def test_the_wire_format_docs_integer_examples() -> None:
    """docs/wire-format.md, "Rejected calls": 1795480994000, 1795480994000.0 and 1.795480994E12
    are the same time; 1795480994000.5 is rejected."""
    submitted = 1_795_480_994_000
    for text in (b"1795480994000", b"1795480994000.0", b"1.795480994E12"):
        raw = (b'{"v":1,"id":"e1","task":"t","submitted_ms":' + text + b"}")
        assert parse_call(raw, now_ms=submitted).submitted_ms == submitted
    assert "whole milliseconds" in reason(
        b'{"v":1,"id":"e1","task":"t","submitted_ms":1795480994000.5}', now_ms=submitted)


def test_execution_round_trips() -> None:
    call = Call(id="e1", task="t", args=[1], kwargs={}, submitted_ms=5, defer_key="k")
    execution = FiredCall(call=call, due_ms=1_005, fired_ms=1_010)
    data = json.loads(dumps(execution.to_dict()))
    assert data["kind"] == "execution"
    assert execution_from_dict(data) == execution


def test_event_names_the_call() -> None:
    call = Call(id="e1", task="t", args=[], kwargs={}, submitted_ms=5, defer_key="k")
    assert event("deferred", call, 9, successor="e2") == {
        "v": 1, "type": "deferred", "id": "e1", "task": "t", "defer_key": "k", "ts_ms": 9,
        "successor": "e2",
    }


# -- invalid records ------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b""])
def test_not_json(raw: bytes) -> None:
    assert reason(raw).startswith("not valid JSON")


def test_no_value() -> None:
    with pytest.raises(InvalidRecord, match="empty record"):
        parse_json(None, LIMIT)


@pytest.mark.parametrize(("raw", "kind"), [(b"[1]", "list"), (b'"s"', "str"), (b"3", "int"),
                                           (b"null", "NoneType")])
def test_not_an_object(raw: bytes, kind: str) -> None:
    assert reason(raw) == f"expected a JSON object, got {kind}"


@pytest.mark.parametrize("version", [3, 0, "1", "2", None, ...])
def test_unknown_version(version: Any) -> None:
    assert reason(call_dict(v=version)).startswith("unknown schema version")


@pytest.mark.parametrize("name", ["id", "task", "submitted_ms"])
def test_missing_required_field(name: str) -> None:
    assert reason(call_dict(**{name: ...})) == f"missing field {name!r}"
    assert reason(call_dict(**{name: None})) == f"missing field {name!r}"


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("submitted_ms", True, "field 'submitted_ms' must be whole milliseconds (an integer), "
                           "got bool"),
    ("submitted_ms", "1700000000000", "field 'submitted_ms' must be whole milliseconds (an "
                                      "integer), got str"),
    ("submitted_ms", 1.7e12 + 0.5, "field 'submitted_ms' must be whole milliseconds (an "
                                   "integer), got 1700000000000.5"),
    ("delay_ms", True, "field 'delay_ms' must be whole milliseconds (an integer), got bool"),
    ("delay_ms", "60", "field 'delay_ms' must be whole milliseconds (an integer), got str"),
    ("max_wait_ms", False, "field 'max_wait_ms' must be whole milliseconds (an integer), "
                           "got bool"),
    ("id", 7, "field 'id' must be a string, got int"),
    ("task", ["t"], "field 'task' must be a string, got list"),
    ("args", {"a": 1}, "field 'args' must be an array, got dict"),
    ("kwargs", [1], "field 'kwargs' must be an object, got list"),
    ("defer_key", 5, "field 'defer_key' must be a string, got int"),
])
def test_wrong_types(name: str, value: Any, expected: str) -> None:
    assert reason(call_dict(**{name: value})) == expected


@pytest.mark.parametrize(("changes", "expected"), [
    ({"id": ""}, "field 'id' must not be empty"),
    ({"task": ""}, "field 'task' must be a non-empty name without '|'"),
    ({"task": "a|b"}, "field 'task' must be a non-empty name without '|'"),
])
def test_empty_or_ambiguous_names(changes: dict[str, Any], expected: str) -> None:
    assert reason(call_dict(**changes)) == expected


@pytest.mark.parametrize("name", ["delay_ms", "max_wait_ms"])
@pytest.mark.parametrize("value", [-1, -2.0, MAX_DELAY_MS + 1, 10**400])
def test_durations_out_of_range(name: str, value: int) -> None:
    assert reason(call_dict(**{name: value})).startswith(f"field {name!r} must be between 0 and")


@pytest.mark.parametrize("changes", [{"delay_ms": float("nan")},
                                     {"max_wait_ms": float("inf")},
                                     {"submitted_ms": float("nan")},
                                     {"args": [float("nan"), 2]},
                                     {"kwargs": {"x": float("-inf")}}])
def test_numbers_that_are_not_finite_are_not_json(changes: dict[str, Any]) -> None:
    """Python's json writes (and reads) NaN and Infinity literals; RFC 8259 has none. In an
    argument one would reach the task as None (orjson writes it as null)."""
    raw = json.dumps(call_dict(**changes)).encode()
    assert b"NaN" in raw or b"Infinity" in raw
    assert reason(raw).startswith("not valid JSON: ")
    assert "numbers must be finite" in reason(raw)


def test_integers_beyond_64_bits_in_arguments_are_kept() -> None:
    call = parse_call(json.dumps(call_dict(args=[2**64, -2**63 - 1], kwargs={"n": 10**30}))
                      .encode())
    assert call.args == [2**64, -2**63 - 1] and call.kwargs == {"n": 10**30}


@pytest.mark.parametrize("offset", [MAX_CLOCK_SKEW_MS + 1, -(MAX_CLOCK_SKEW_MS + 1),
                                    NOW * 1000 - NOW, -NOW + NOW // 1000])
def test_timestamp_far_from_the_processor_clock(offset: int) -> None:
    data = call_dict(submitted_ms=NOW + offset)
    assert "from the processor's clock" in reason(data, now_ms=NOW)
    assert parse_call(data).submitted_ms == NOW + offset  # no clock: not checked


def test_timestamp_within_skew_is_accepted() -> None:
    for offset in (MAX_CLOCK_SKEW_MS, -MAX_CLOCK_SKEW_MS, 0):
        assert parse_call(call_dict(submitted_ms=NOW + offset), now_ms=NOW).submitted_ms == (
            NOW + offset)


def test_oversize_record() -> None:
    raw = json.dumps(call_dict(args=["x" * 2_000])).encode()
    assert reason(raw, limit=1_000) == f"record of {len(raw)} bytes exceeds the limit of 1000"
    assert parse_json(raw, len(raw))["id"]  # exactly at the limit is fine


def test_max_wait_without_defer_key() -> None:
    assert reason(call_dict(defer_key=None)) == "max_wait_ms needs a defer_key"
    assert parse_call(call_dict(defer_key=None, max_wait_ms=None)).key == call_dict()["id"]


def test_invalid_record_is_a_cfstream_error() -> None:
    import cfstream as cf

    assert issubclass(InvalidRecord, cf.CfStreamError)


# -- control records ------------------------------------------------------------------------


@pytest.mark.parametrize("control", [
    Control(kind="tick", id="e1"),
    Control(kind="cancel", id="e1"),
    Control(kind="cancel", id="e1", reason="user asked"),
    Control(kind="finished", id="e1", attempt=3),
])
def test_control_round_trips(control: Control) -> None:
    data = parse_json(dumps(control.to_dict()), LIMIT)
    assert control_from_dict(data) == control


def test_control_without_reason_has_no_reason_field() -> None:
    assert Control(kind="tick", id="e1").to_dict() == {"v": 1, "kind": "tick", "id": "e1"}


@pytest.mark.parametrize("kind", ["call", "fire", None])
def test_control_of_unknown_kind(kind: Any) -> None:
    with pytest.raises(InvalidRecord, match="unknown record kind"):
        control_from_dict({"v": 1, "kind": kind, "id": "e1"})


@pytest.mark.parametrize(("data", "expected"), [
    ({"v": 1, "kind": "tick"}, "missing field 'id'"),
    ({"v": 1, "kind": "tick", "id": 3}, "field 'id' must be a string, got int"),
    ({"v": 1, "kind": "cancel", "id": "e1", "reason": True},
     "field 'reason' must be a string, got a boolean"),
    ({"v": 1, "kind": "finished", "id": "e1"}, "missing field 'attempt'"),
    ({"v": 1, "kind": "finished", "id": "e1", "attempt": 0},
     "field 'attempt' must be a whole number from 1, got 0"),
])
def test_invalid_control(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        control_from_dict(data)
    assert info.value.reason == expected


def test_a_collect_call_whose_argument_is_over_its_max_bytes_is_too_large() -> None:
    record = call_dict(v=2, defer_key="k", args=["x" * 20], kwargs={},
                       collect={"max_calls": 5, "max_bytes": 21})
    assert reason(record) == ("a collect call's argument of 22 bytes exceeds its "
                              "collect.max_bytes of 21")
    assert parse_call({**record, "collect": {"max_calls": 5, "max_bytes": 22}}
                      ).modes.collect == Collect(5, 22)


def test_an_execution_carries_the_collected_arguments_to_the_worker() -> None:
    record = {**call_dict(v=2, defer_key="k", args=[3], kwargs={},
                          collect={"max_calls": 5, "max_bytes": 99}),
              "kind": "execution", "due_ms": 5, "fired_ms": 6, "collected": [1, 2, 3]}
    execution = execution_from_dict(record)
    assert execution.call.collected == [1, 2, 3]
    assert execution.to_dict() == record
    with pytest.raises(InvalidRecord, match="'collected' must be an array"):
        execution_from_dict({**record, "collected": {"a": 1}})


def test_if_running_after_is_a_v2_field_that_round_trips() -> None:
    call = Call(id="e1", task="t:f", args=[1], kwargs={}, submitted_ms=5, delay_ms=4,
                defer_key="k", modes=Modes(if_running="after"))
    data = call.to_dict()
    assert data["v"] == 2 and data["if_running"] == "after"
    assert parse_call(data) == call


@pytest.mark.parametrize(("fields", "expected"), [
    ({"if_running": "later"}, "if_running must be 'concurrent' or 'after', got 'later'"),
    ({"if_running": "after", "defer_key": None, "max_wait_ms": None},
     "if_running='after' only applies to deferred calls: set defer on the task (a defer_key on "
     "a call) too"),
    ({"if_running": "after", "args": [1], "kwargs": {},
      "collect": {"max_calls": 5, "max_bytes": 99}},
     "if_running='after' does not take collect: a window held while a run lasts could not fire "
     "early at its bounds"),
])
def test_a_bad_if_running_is_invalid(fields: dict[str, Any], expected: str) -> None:
    assert reason(call_dict(**{"v": 2, "defer_key": "k", **fields})) == expected


# -- Modes ------------------------------------------------------------------------------------


def test_calls_without_modes_share_no_modes_and_are_written_as_v1() -> None:
    for data in (call_dict(), call_dict(leading=None, keep=None, collect=None, if_running=None),
                 call_dict(v=2, leading=False, keep="last", if_running="concurrent"),
                 call_dict(attempt=2, not_before_ms=NOW)):
        call = parse_call(data)
        assert call.modes is NO_MODES and call.to_dict()["v"] == 1
        assert trusted_call(call.to_dict()).modes is NO_MODES


def test_calls_with_the_same_modes_share_one_value() -> None:
    read = parse_call(call_dict(v=2, leading=True, keep="first"))
    stored = trusted_call(read.to_dict())
    assert read.modes == Modes(leading=True, keep="first")
    assert stored.modes is read.modes is Modes.checked(True, "first", deferred=True)
    collecting = call_dict(v=2, args=[1], kwargs={}, collect={"max_calls": 3, "max_bytes": 99.0})
    assert parse_call(collecting).modes is trusted_call(parse_call(collecting).to_dict()).modes


@pytest.mark.parametrize("fields", [
    {"leading": 1}, {"keep": "middle"}, {"if_running": "later"},
    {"keep": "first", "defer_key": None, "max_wait_ms": None},
    {"if_running": "after", "collect": {"max_calls": 3, "max_bytes": 99}, "args": [1],
     "kwargs": {}},
    {"collect": {"max_calls": 0, "max_bytes": 99}, "args": [1], "kwargs": {}},
    {"collect": {"max_calls": 3, "max_bytes": 5}, "args": ["too long"], "kwargs": {}},
    {"collect": {"max_calls": 3, "max_bytes": 99}, "args": [1, 2], "kwargs": {}},
])
def test_the_reader_and_submit_by_name_reject_bad_modes_for_one_reason(
        fields: dict[str, Any]) -> None:
    record = call_dict(v=2, **fields)
    expected = reason(record)
    options = {name: record[name] for name in ("leading", "keep", "if_running") if name in record}
    try:
        if "collect" in record:
            options["collect"] = cf.Collect(**record["collect"])
        cf.submit(record["task"], record["args"], record["kwargs"], delay=60,
                  defer_key=record["defer_key"], **options)
    except (cf.ConfigurationError, cf.SubmitError) as exc:
        assert str(exc).endswith(expected)
    else:
        pytest.fail("cf.submit took modes that the reader rejects")


# -- traceparent ----------------------------------------------------------------------------

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize("fields", [{}, {"attempt": 2, "not_before_ms": NOW}])  # fast, checked
def test_a_call_carries_its_traceparent_to_its_execution(fields: dict[str, Any]) -> None:
    call = parse_call(call_dict(traceparent=TRACEPARENT, **fields))
    assert call.traceparent == TRACEPARENT
    assert call.to_dict()["traceparent"] == TRACEPARENT
    execution = FiredCall(call, due_ms=NOW, fired_ms=NOW)
    assert execution_from_dict(json.loads(dumps(execution.to_dict()))).call == call
    assert trusted_call(call.to_dict()) == call


@pytest.mark.parametrize("value", [
    None, 17, ["00"], {"a": 1}, True, "", "garbage", "x" * 100_000,
    TRACEPARENT.upper(),  # hex must be lower case
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # an all-zero trace id
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # an all-zero span id
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff is forbidden
    TRACEPARENT + "-extra",  # version 00 has exactly four fields
    TRACEPARENT[:-1],
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0x",
])
@pytest.mark.parametrize("fields", [{}, {"attempt": 2, "not_before_ms": NOW}])
def test_a_bad_traceparent_is_ignored_and_the_call_kept(value: Any, fields: dict[str, Any]) -> None:
    call = parse_call(call_dict(traceparent=value, **fields))
    assert call.traceparent is None and "traceparent" not in call.to_dict()
    assert call.id == call_dict()["id"]


def test_a_later_version_s_traceparent_is_read_as_its_first_four_fields() -> None:
    later = "01" + TRACEPARENT[2:]
    assert parse_call(call_dict(traceparent=later + "-what-comes-next")).traceparent == later
    assert parse_call(call_dict(traceparent=later)).traceparent == later


def test_submit_s_record_bytes_carry_the_traceparent_as_call_writes_it() -> None:
    from cfstream.wire import CallRecords

    for defer_key in (None, "k"):
        call = Call(id="0190a5b2-0000-7000-8000-000000000001", task="app:f", args=[1],
                    kwargs={}, submitted_ms=NOW, delay_ms=5, defer_key=defer_key,
                    max_wait_ms=None, traceparent=TRACEPARENT)
        key, value = CallRecords("app:f", 5, None).record(call.id, "[1]", "{}", NOW, defer_key,
                                                          TRACEPARENT)
        assert (key, value) == (call.key.encode(), dumps(call.to_dict()))


@pytest.mark.parametrize("raw", [
    b'{"v":1,"id":"0190a5b2-0000-7000-8000-000000000009","args":[NaN]}',
    '{"v":1,"id":"0190a5b2-0000-7000-8000-000000000009"}'.encode("utf-16"),
])
def test_a_parked_record_that_is_not_json_still_tells_its_waiters(raw: bytes) -> None:
    """Its `invalid` event is keyed by the id it names, read leniently."""
    parked = dead_letter(InvalidRecord("not_json", "not valid JSON"), "calls", 0, 5, b"k", raw,
                         NOW)
    assert parked.event_key == b"0190a5b2-0000-7000-8000-000000000009"
    assert json.loads(parked.event)["id"] == "0190a5b2-0000-7000-8000-000000000009"
