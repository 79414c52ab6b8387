"""Calls, executions and control records the code builds match their schemas.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import uuid
from typing import Any

import pytest
from built_calls import CALLS
from hypothesis import given, settings
from hypothesis import strategies as st
from schema_checks import ID, NOW, assert_invalid, assert_valid, declared, validator

from cfstream.codec import dumps, to_json_value
from cfstream.wire import (
    Call,
    Collect,
    Control,
    FiredCall,
    call_from_dict,
    control_from_dict,
    execution_from_dict,
)


def test_the_client_builds_every_flavour_of_call() -> None:
    assert {c.defer_key is None for c in CALLS} == {True, False}
    assert any(c.max_wait_ms is not None for c in CALLS)
    assert any((c.defer_key or "").startswith("sha256:") for c in CALLS)
    assert any(c.defer_key == "" for c in CALLS)
    assert {(c.modes.leading, c.modes.keep) for c in CALLS} == {
        (False, "last"), (True, "last"), (False, "first"), (True, "first")}
    assert {c.modes.collect for c in CALLS} >= {None, Collect(1000, 131072), Collect(2, 99)}
    assert {c.modes.if_running for c in CALLS} == {"concurrent", "after"}


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
    runs = [dataclasses.replace(c, collected=[c.args[0], c.args[0]])
            for c in CALLS if c.modes.collect]
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
