"""JSON encoding of task arguments and results (cfstream.codec)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cfstream.codec import canonical, dumps, from_json_value, loads, to_json_value


def round_trip(value: Any) -> Any:
    """Through bytes, as a call travels (read as the processor, the worker and waiters read)."""
    return from_json_value(loads(dumps(to_json_value(value))))


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 2**70, -2**70, 2**64, 2**64 - 1, -2**63 - 1, -2**63, 10**30, 1.5, -0.25, "", "héllo ✓", [], {}, [1, "a", None],
    {"a": {"b": [1, 2.5, "c"]}},
])
def test_plain_json_passes_through(value: Any) -> None:
    assert to_json_value(value) == value
    assert round_trip(value) == value


@pytest.mark.parametrize("value", [
    dt.datetime(2026, 11, 24, 3, 43, 14, 123456, tzinfo=dt.UTC),
    dt.datetime(2026, 11, 24, 3, 43, 14, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    dt.datetime(2026, 11, 24, 3, 43, 14, 1),
    dt.date(2026, 11, 24),
    uuid.UUID("0b6e2c1e-5b7a-4c1e-9f00-0123456789ab"),
    decimal.Decimal("12.50"),
    decimal.Decimal("-1E+3"),
    b"\x00\xffbytes",
    b"",
])
def test_special_types_round_trip(value: Any) -> None:
    back = round_trip(value)
    assert back == value
    assert type(back) is type(value)
    assert str(back) == str(value)  # same offset, precision and Decimal exponent


def test_naive_datetime_stays_naive_and_aware_keeps_its_offset() -> None:
    naive = round_trip(dt.datetime(2026, 1, 2, 3, 4, 5))
    assert naive.tzinfo is None
    aware = round_trip(dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=-8))))
    assert aware.utcoffset() == dt.timedelta(hours=-8)


def test_datetime_is_not_decoded_as_a_date() -> None:
    encoded = to_json_value(dt.datetime(2026, 1, 2, 3, 4))
    assert list(encoded) == ["$datetime"]
    assert to_json_value(dt.date(2026, 1, 2)) == {"$date": "2026-01-02"}


def test_bytearray_and_memoryview_decode_to_bytes() -> None:
    assert round_trip(bytearray(b"abc")) == b"abc"
    assert round_trip(memoryview(b"abc")) == b"abc"


def test_tuples_become_lists() -> None:
    assert to_json_value((1, (2, 3))) == [1, [2, 3]]
    assert round_trip((1, (2, 3))) == [1, [2, 3]]


def test_nested_values_round_trip() -> None:
    value = {
        "when": [dt.date(2026, 1, 1), dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)],
        "ids": {"user": uuid.UUID(int=5), "amount": decimal.Decimal("0.10")},
        "blob": [b"x", {"deep": [b"y"]}],
    }
    assert round_trip(value) == value


@pytest.mark.parametrize("value", [
    {"$datetime": "not a date"},
    {"$date": "2026-01-01"},
    {"$dict": {"a": 1}},
    {"$anything": [1, 2]},
    {"$uuid": {"$uuid": "0b6e2c1e-5b7a-4c1e-9f00-0123456789ab"}},
])
def test_user_dict_with_single_dollar_key_is_not_mistaken_for_a_tag(value: Any) -> None:
    encoded = to_json_value(value)
    assert list(encoded) == ["$dict"]
    back = round_trip(value)
    assert back == value
    assert type(back) is dict


def test_user_dict_holding_special_values_under_a_dollar_key() -> None:
    value = {"$when": dt.date(2026, 1, 1)}
    assert round_trip(value) == value
    two_keys = {"$a": 1, "$b": uuid.UUID(int=1)}
    assert round_trip(two_keys) == two_keys


@pytest.mark.parametrize(("value", "where"), [
    ({1, 2}, "send_email(to)"),
    (object(), "send_email(to)"),
    (float("nan"), "send_email(to)"),
    (float("inf"), "send_email(to)"),
    ({"a": [1, {2}]}, "send_email(to)['a'][1]"),
    ([float("-inf")], "send_email(to)[0]"),
])
def test_unsupported_values_raise_type_error_naming_the_argument(value: Any, where: str) -> None:
    with pytest.raises(TypeError) as info:
        to_json_value(value, "send_email(to)")
    assert str(info.value).startswith(f"{where}: ")


def test_set_error_says_what_to_send_instead() -> None:
    with pytest.raises(TypeError, match=r"set cannot be sent to a task"):
        to_json_value({1}, "args[0]")


def test_non_string_dict_keys_are_rejected() -> None:
    with pytest.raises(TypeError, match=r"^payload: dict keys must be strings"):
        to_json_value({1: "a"}, "payload")


def test_canonical_is_stable_under_dict_order() -> None:
    one = {"b": 1, "a": {"d": [1, 2], "c": "é"}}
    two = {"a": {"c": "é", "d": [1, 2]}, "b": 1}
    assert canonical(one) == canonical(two)
    assert canonical(one) == '{"a":{"c":"é","d":[1,2]},"b":1}'
    assert canonical({"a": [2, 1]}) != canonical({"a": [1, 2]})


@given(st.dictionaries(st.text(), st.integers() | st.text(), max_size=8), st.randoms())
def test_canonical_ignores_insertion_order(data: dict[str, Any], rnd: Any) -> None:
    items = list(data.items())
    rnd.shuffle(items)
    assert canonical(dict(items)) == canonical(data)


FIXED_ZONES = st.sampled_from([
    dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(dt.timedelta(hours=-8)),
])

LEAVES = (
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.datetimes() | st.datetimes(timezones=FIXED_ZONES) | st.dates() | st.uuids()
    | st.decimals(allow_nan=False, allow_infinity=False) | st.binary()
)
VALUES = st.recursive(
    LEAVES,
    lambda children: st.lists(children, max_size=4) | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=5) | st.sampled_from(["$date", "$dict", "$x"]),
                      children, max_size=3),
    max_leaves=20,
)


def without_tuples(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [without_tuples(item) for item in value]
    if isinstance(value, dict):
        return {k: without_tuples(v) for k, v in value.items()}
    return value


@given(VALUES)
def test_any_supported_value_round_trips(value: Any) -> None:
    back = round_trip(value)
    assert back == without_tuples(value)
    assert repr_types(back) == repr_types(without_tuples(value))


def repr_types(value: Any) -> Any:
    """The shape of a value by type, so 1 and 1.0 or True and 1 are told apart."""
    if isinstance(value, list):
        return [repr_types(item) for item in value]
    if isinstance(value, dict):
        return {k: repr_types(v) for k, v in value.items()}
    return type(value).__name__


@pytest.mark.parametrize("value", [2**64, -2**63 - 1, 10**30, -10**400, [1, {"n": 2**64}]])
def test_integers_beyond_64_bits_are_read_exactly(value: Any) -> None:
    """orjson reads them as floats, silently: they must not reach a task or a waiter so."""
    raw = json.dumps(value).encode()
    assert loads(raw) == value
    assert repr_types(loads(raw)) == repr_types(value)


def test_digits_in_strings_read_the_same_either_way() -> None:
    value = {"id": "1" * 40, "n": 5, "x": 0.1}
    assert loads(json.dumps(value).encode()) == value


@pytest.mark.parametrize("raw", [b"[NaN]", b'{"a": Infinity}', b"[-Infinity]", b"[1e400]",
                                 b"[-1e400]",
                                 b'[1, 18446744073709551616, "' + b"9" * 30 + b'", NaN]'])
def test_numbers_that_are_not_finite_are_not_json(raw: bytes) -> None:
    """Python's json reads NaN and Infinity (and 1e400 as inf); orjson then writes null."""
    with pytest.raises(ValueError, match="numbers must be finite"):
        loads(raw)


def test_data_that_is_not_finite_is_never_written() -> None:
    """dumps takes the standard library for integers beyond 64 bits: it must not write NaN."""
    with pytest.raises(ValueError):
        dumps([2**64, float("nan")])


@pytest.mark.parametrize("raw", [b"\xef\xbb\xbf{}", "{}".encode("utf-16"), b'["\\ud800"]',
                                 b"{", b'["\xff"]'])
def test_what_rfc_8259_json_is_not_is_refused(raw: bytes) -> None:
    """A BOM, UTF-16, a lone surrogate, a broken text, bytes that are not UTF-8."""
    with pytest.raises(ValueError):
        loads(raw)
