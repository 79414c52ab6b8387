"""The JSON Schemas in cfstream/schemas/: valid, consistent, bounded as the code is.
"""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator
from schema_checks import load

from cfstream.wire import (
    EVENT_TYPES,
    MAX_DELAY_MS,
)


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
