"""Checking records against the JSON Schemas in cfstream/schemas/, and reading them the way
the processor and the worker do (for tests anywhere under tests/).
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

from cfstream.codec import dumps
from cfstream.wire import (
    InvalidRecord,
    call_from_dict,
    control_from_dict,
    execution_from_dict,
    parse_json,
)

NOW = 1_700_000_000_000
ID = "0190a5b2-6c3e-7a01-8f00-3b9d2c4e5f60"
BIG = 1 << 30  # payload limit for parse_json in these tests: size is not what they check


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



def check_event(record: dict[str, Any]) -> None:
    record = json.loads(dumps(record))
    assert_valid("event", record)
    assert_valid("event", record, record["type"])
    assert set(record) <= declared("event", record["type"]), record


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
