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
    """Decoded JSON: orjson, and the standard library for what orjson refuses (integers beyond
    64 bits); raises ValueError for what neither reads."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def json_text(data: Any) -> str:
    """Compact JSON text of already-encoded data (:func:`dumps` before the UTF-8)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


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
