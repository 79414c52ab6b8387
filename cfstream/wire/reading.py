"""Reading records: JSON into :class:`Call`, :class:`FiredCall` and :class:`Control`, checked
field by field (:class:`InvalidRecord` says what is wrong), or trusted when cfstream wrote them."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from cfstream.codec import loads
from cfstream.errors import CfStreamError
from cfstream.wire.modes import Modes, ModesError, collect_bounds, trusted_modes
from cfstream.wire.records import (
    KEY_SEPARATOR,
    MAX_DELAY_MS,
    MODES_VERSION,
    SCHEMA_VERSION,
    Call,
    Control,
    FiredCall,
)

READ_VERSIONS = (SCHEMA_VERSION, MODES_VERSION)
# Calls stamped further from the processor's clock than this are rejected: a wrong clock or unit
# (seconds for milliseconds) would otherwise schedule a call decades away.
MAX_CLOCK_SKEW_MS = 7 * 24 * 3600 * 1000

# W3C Trace Context: version-traceid-parentid-flags, lower-case hex; a later version may add
# fields after the flags ("-..."), which a version 00 reader leaves out.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(?:-|$)")
TRACEPARENT_LENGTH = 55


class InvalidRecord(CfStreamError):
    """A record on a cfstream topic does not follow the wire format.

    ``code`` is a short label for metrics (``not_json``, ``missing_field``…); ``reason`` says
    what exactly is wrong, for people.
    """

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(reason)


def parse_json(raw: bytes | None, max_bytes: int) -> dict[str, Any]:
    if raw is None:
        raise InvalidRecord("empty", "empty record (no value)")
    if len(raw) > max_bytes:
        raise InvalidRecord("too_large",
                            f"record of {len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        data = loads(raw)
    except ValueError as exc:  # also UnicodeError, and ints over Python's digit limit
        raise InvalidRecord("not_json", f"not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRecord("not_json", "JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidRecord("not_object", f"expected a JSON object, got {type(data).__name__}")
    version = data.get("v")
    if isinstance(version, bool) or version not in READ_VERSIONS:
        raise InvalidRecord("unknown_version",
                            f"unknown schema version {version!r}; this cfstream reads v1 and v2")
    return data


def _field(data: dict[str, Any], name: str, kinds: type | tuple[type, ...],
           required: bool = True) -> Any:
    if name not in data or data[name] is None:
        if required:
            raise InvalidRecord("missing_field", f"missing field {name!r}")
        return None
    value = data[name]
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise InvalidRecord("wrong_type",
                            f"field {name!r} must be {_kind_names(kinds)}, got a boolean")
    if not isinstance(value, kinds):
        raise InvalidRecord(
            "wrong_type",
            f"field {name!r} must be {_kind_names(kinds)}, got {type(value).__name__}"
        )
    return value


def _kind_names(kinds: type | tuple[type, ...]) -> str:
    names = {bool: "a boolean", int: "an integer", str: "a string", list: "an array",
             dict: "an object", float: "a number"}
    seq = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join(names.get(k, k.__name__) for k in seq)


def _optional_ms(data: dict[str, Any], name: str, required: bool = False) -> int | None:
    """Whole milliseconds; 5.0 counts (as in JSON Schema: some encoders write integers so)."""
    if data.get(name) is None:
        return _field(data, name, int, required)  # says it is missing, if required
    value = _whole(data[name])
    if isinstance(value, bool) or not isinstance(value, int):
        shown = value if isinstance(value, float) else type(value).__name__
        raise InvalidRecord("wrong_type",
                            f"field {name!r} must be whole milliseconds (an integer), got {shown}")
    return value


def _ms(data: dict[str, Any], name: str) -> int:
    value = _optional_ms(data, name, required=True)
    assert value is not None  # noqa: S101 - required above
    return value


def _duration(data: dict[str, Any], name: str, required: bool) -> int | None:
    value = _optional_ms(data, name, required)
    if value is not None and not 0 <= value <= MAX_DELAY_MS:
        raise InvalidRecord("bad_duration",
                            f"field {name!r} must be between 0 and {MAX_DELAY_MS} ms, got {value}")
    return value


def call_from_dict(data: dict[str, Any], now_ms: int | None = None) -> Call:
    """A validated :class:`Call`; ``now_ms`` turns on the clock-skew check.

    Calls as cfstream's clients write them pass a quick check of exact types; anything else
    (floats for milliseconds, a missing field, a bad value) takes the field-by-field checks,
    which accept or say what is wrong. The processor validates every call it reads.
    """
    get = data.get
    call_id, task, submitted = get("id"), get("task"), get("submitted_ms")
    args, kwargs, delay = get("args"), get("kwargs"), get("delay_ms")
    defer_key, max_wait = get("defer_key"), get("max_wait_ms")
    leading, keep = get("leading"), get("keep")
    if ("attempt" not in data and type(call_id) is str and call_id and type(task) is str and task
            and KEY_SEPARATOR not in task and type(submitted) is int
            and (now_ms is None or abs(submitted - now_ms) <= MAX_CLOCK_SKEW_MS)
            and (args is None or type(args) is list)
            and (kwargs is None or type(kwargs) is dict)
            and (delay is None or (type(delay) is int and 0 <= delay <= MAX_DELAY_MS))
            and (defer_key is None or type(defer_key) is str)
            and (max_wait is None or (type(max_wait) is int and 0 <= max_wait <= MAX_DELAY_MS
                                      and defer_key is not None))
            and (leading is None or leading is False)
            and (keep is None or keep == "last") and get("collect") is None
            and get("if_running") is None):
        trace = get("traceparent")
        return Call(call_id, task, args or [], kwargs or {}, submitted, delay or 0, defer_key,
                    max_wait, traceparent=None if trace is None else traceparent(trace))
    return _checked_call(data, now_ms)


def traceparent(value: Any) -> str | None:
    """A record's ``traceparent`` as a W3C Trace Context parent (of a later version: its first
    four fields), or None when it is not one: the call is then untraced, never rejected."""
    if type(value) is not str or len(value) < TRACEPARENT_LENGTH:
        return None
    match = _TRACEPARENT.match(value)
    if (match is None or match[1] == "ff" or (match[1] == "00" and len(value) > TRACEPARENT_LENGTH)
            or match[2] == "0" * 32 or match[3] == "0" * 16):
        return None
    return value[:TRACEPARENT_LENGTH]


def trusted_call(data: dict[str, Any]) -> Call:
    """A :class:`Call` from a dict cfstream wrote itself (the processor's own state)."""
    return Call(data["id"], data["task"], data.get("args") or [], data.get("kwargs") or {},
                data["submitted_ms"], data.get("delay_ms") or 0, data.get("defer_key"),
                data.get("max_wait_ms"), data.get("attempt") or 1, data.get("not_before_ms"),
                trusted_modes(data), data.get("collected"), data.get("traceparent"))


def _checked_call(data: dict[str, Any], now_ms: int | None) -> Call:
    call_id = _field(data, "id", str)
    if not call_id:
        raise InvalidRecord("wrong_type", "field 'id' must not be empty")
    task = _field(data, "task", str)
    if not task or KEY_SEPARATOR in task:
        raise InvalidRecord("wrong_type",
                            f"field 'task' must be a non-empty name without {KEY_SEPARATOR!r}")
    submitted = _ms(data, "submitted_ms")
    # A retry keeps its first attempt's submit time, which may be long past.
    retry = data.get("attempt") not in (None, 1)
    if now_ms is not None and (submitted - now_ms > MAX_CLOCK_SKEW_MS
                               or not retry and now_ms - submitted > MAX_CLOCK_SKEW_MS):
        raise InvalidRecord(
            "clock_skew",
            f"submitted_ms {submitted} is more than {MAX_CLOCK_SKEW_MS // 86_400_000} days from "
            f"the processor's clock ({now_ms}); is it in milliseconds since the epoch?"
        )
    max_wait = _duration(data, "max_wait_ms", required=False)
    defer_key = _field(data, "defer_key", str, required=False)
    if max_wait is not None and defer_key is None:
        raise InvalidRecord("missing_field", "max_wait_ms needs a defer_key")
    attempt = _attempt(data)
    not_before = _optional_ms(data, "not_before_ms")
    if (attempt > 1) != (not_before is not None):
        raise InvalidRecord("missing_field",
                            "a retry (attempt above 1) needs not_before_ms, and only a retry")
    args = _field(data, "args", list, required=False) or []
    kwargs = _field(data, "kwargs", dict, required=False) or {}
    return Call(
        id=call_id,
        task=task,
        args=args,
        kwargs=kwargs,
        submitted_ms=submitted,
        delay_ms=_duration(data, "delay_ms", required=False) or 0,
        defer_key=defer_key,
        max_wait_ms=max_wait,
        attempt=attempt,
        not_before_ms=not_before,
        modes=_modes(data, defer_key, args, kwargs),
        traceparent=traceparent(data.get("traceparent")),
    )


def _attempt(data: dict[str, Any], required: bool = False) -> int:
    """A call's or finished record's attempt: a whole number from 1 (absent: 1, if optional)."""
    attempt = data.get("attempt")
    if attempt is None:
        if required:
            raise InvalidRecord("missing_field", "missing field 'attempt'")
        return 1
    attempt = _whole(attempt)
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise InvalidRecord("wrong_type",
                            f"field 'attempt' must be a whole number from 1, got {attempt!r}")
    return attempt


def _modes(data: dict[str, Any], defer_key: str | None, args: list[Any],
           kwargs: dict[str, Any]) -> Modes:
    """A call's modes as Modes.checked says (null fields are absent ones), and a collect call's
    one argument as Collect.check_item says."""
    collect = _field(data, "collect", dict, required=False)
    leading, keep, if_running = data.get("leading"), data.get("keep"), data.get("if_running")
    try:
        modes = Modes.checked(
            False if leading is None else leading, "last" if keep is None else keep,
            None if collect is None else collect_bounds(_whole(collect.get("max_calls")),
                                                        _whole(collect.get("max_bytes"))),
            "concurrent" if if_running is None else if_running, deferred=defer_key is not None)
        if modes.collect is not None:
            modes.collect.check_item(args, kwargs)
    except ModesError as exc:
        raise InvalidRecord(exc.code, exc.reason) from None
    return modes


def _whole(value: Any) -> Any:
    """2.0 as 2, as JSON Schema's integer takes it; anything else as it is."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def execution_from_dict(data: dict[str, Any]) -> FiredCall:
    call = call_from_dict(data)
    collected = data.get("collected")
    if collected is not None:
        call = replace(call, collected=_field(data, "collected", list))
    due, fired = data.get("due_ms"), data.get("fired_ms")
    if type(due) is not int or type(fired) is not int:  # cfstream writes integers
        due, fired = _ms(data, "due_ms"), _ms(data, "fired_ms")  # the checks say what is wrong
    return FiredCall(call, due, fired)


def control_from_dict(data: dict[str, Any]) -> Control:
    kind = data.get("kind")
    if kind not in ("tick", "cancel", "finished"):
        raise InvalidRecord("unknown_kind", f"unknown record kind {kind!r}; expected 'call', "
                                            "'tick', 'cancel' or 'finished'")
    attempt = _attempt(data, required=True) if kind == "finished" else 1
    return Control(kind=kind, id=_field(data, "id", str),
                   reason=_field(data, "reason", str, required=False) or "", attempt=attempt)
