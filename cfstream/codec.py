"""JSON encoding of task arguments and results. Never pickle.

Plain JSON values pass through. These types are encoded as one-key objects and decoded back:

    datetime  {"$datetime": "2026-11-24T03:43:14.123456+00:00"}   (ISO 8601)
    date      {"$date": "2026-11-24"}
    UUID      {"$uuid": "0b6e2c1e-..."}
    Decimal   {"$decimal": "12.50"}
    bytes     {"$bytes": "<base64>"}
    tuple     a JSON array (decodes to a list)

A dict of the caller's own whose only key starts with "$" is wrapped as {"$dict": {...}} so it
cannot be mistaken for one of the above. Anything else raises TypeError naming where it was found.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import re
import uuid
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any

import orjson

_DECODERS: dict[str, Callable[[Any], Any]] = {
    "$datetime": dt.datetime.fromisoformat,
    "$date": dt.date.fromisoformat,
    "$uuid": uuid.UUID,
    "$decimal": decimal.Decimal,
    "$bytes": base64.b64decode,
    "$dict": lambda value: value,
}


def to_json_value(value: Any, where: str = "value") -> Any:
    """``value`` as plain JSON data; TypeError names ``where`` for anything unsupported."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise TypeError(f"{where}: {value!r} has no JSON encoding; pass a finite float")
        return value
    if isinstance(value, (list, tuple)):
        return [to_json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: dict keys must be strings for JSON, got {key!r}")
            out[key] = to_json_value(item, f"{where}[{key!r}]")
        if len(out) == 1 and next(iter(out)).startswith("$"):
            return {"$dict": out}
        return out
    # datetime is a subclass of date: test it first.
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, decimal.Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(
        f"{where}: {type(value).__name__} cannot be sent to a task; use JSON types, datetime, "
        "date, UUID, Decimal or bytes (or pass an id and load the object in the task)"
    )


def from_json_value(value: Any) -> Any:
    """The Python value that :func:`to_json_value` encoded."""
    if isinstance(value, list):
        return [from_json_value(item) for item in value]
    if isinstance(value, dict):
        if len(value) == 1:
            (tag, inner), = value.items()
            decode = _DECODERS.get(tag)
            if decode is not None:
                if tag == "$dict":
                    return {k: from_json_value(v) for k, v in inner.items()}
                return decode(inner)
        return {k: from_json_value(v) for k, v in value.items()}
    return value


def dumps(data: Any) -> bytes:
    """Compact JSON bytes of already-encoded data.

    orjson writes the same bytes as the standard library for cfstream's records, about 20x
    faster (the processor writes several records per call); the standard library takes what
    orjson refuses (integers beyond 64 bits), so what was accepted stays accepted.
    """
    try:
        return orjson.dumps(data)
    except TypeError:
        return json_text(data).encode("utf-8")


def loads(raw: bytes) -> Any:
    """Decoded JSON as RFC 8259 has it: UTF-8, finite numbers, integers exact at any size.
    ValueError for anything else (RecursionError for nesting too deep).

    orjson reads nearly everything ~4x faster than the standard library, but an integer beyond
    64 bits silently comes back as a float. A text that may hold one (19 digits in a row, in a
    string too) is read by the standard library instead, as is what orjson refuses, for the
    same values either way. The check costs ~0.5 us a 200-byte record (a regular expression
    took 2.4-4.7 us)."""
    if _NINETEEN_DIGITS not in raw.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant,
                      parse_float=_finite_float)
    if _SURROGATE_ESCAPE.search(raw):
        json.dumps(data, ensure_ascii=False).encode("utf-8")  # a lone surrogate raises
    return data


# Beyond 64 bits: above 2**64 - 1 (20 digits) or below -2**63 (a minus and 19 digits).
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19
# A \uD800-\uDFFF escape: paired it is fine, alone it makes a str that cannot be UTF-8.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON: numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (_INF, -_INF):
        raise ValueError(f"{text} is out of a float's range: numbers must be finite")
    return value


def json_text(data: Any) -> str:
    """Compact JSON text of already-encoded data (:func:`dumps` before the UTF-8)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _finite_float_text(value: float) -> str:
    if value != value or value in (_INF, -_INF):
        raise ValueError("not finite")  # to_json_value names the argument
    return float.__repr__(value)


_INF = float("inf")

# The JSON text json_text() writes for each plain scalar type (exact types: subclasses and every
# other type go through to_json_value). A lookup miss (KeyError) or a ValueError means "use
# to_json_value", which encodes the value or raises the TypeError naming it. Submit's fast path.
SCALAR_TEXT: dict[type, Callable[[Any], str]] = {
    str: encode_basestring,
    int: int.__repr__,
    float: _finite_float_text,
    bool: lambda value: "true" if value else "false",
    type(None): lambda _value: "null",
}


def canonical(data: Any) -> str:
    """A stable text of encoded data: equal values give equal text whatever the dict order."""
    return json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
