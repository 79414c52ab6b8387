"""The records cfstream puts on Kafka; JSON Schemas for them are in ``cfstream/schemas/``.

Calls topic (key: the call's key, see :attr:`Call.key`), one of:
    {"v": 1, "kind": "call", "id", "task", "args", "kwargs", "submitted_ms",
     "delay_ms", "defer_key", "max_wait_ms"}
    ... with "v": 2 and "leading": true, "keep": "first", "collect": {"max_calls",
    "max_bytes"} and/or "if_running": "after" (deferring modes)
    {"v": 1, "kind": "tick", "id"}       (the processor's own timer record)
    {"v": 1, "kind": "cancel", "id"}     (cancel the pending call with this id)
    {"v": 1, "kind": "finished", "id", "attempt"}  (a worker: this execution's run ended)
Executions topic (same key): a call plus "due_ms" and "fired_ms".
Events topic (key: execution id): {"v": 1, "type", "id", "task", "defer_key", "ts_ms", ...}.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from json.encoder import encode_basestring
from typing import Any

import orjson

from cfstream.codec import dumps, loads
from cfstream.errors import CfStreamError

SCHEMA_VERSION = 1
# A call that sets a deferring mode (leading, keep) is written as v2: a v1-only reader rejects it
# (dead letter) instead of ignoring the field and running the wrong call at the wrong time.
MODES_VERSION = 2
READ_VERSIONS = (SCHEMA_VERSION, MODES_VERSION)
# keep=: which call of a deferral window runs. "last" (the default) replaces the pending call
# with each newer one; "first" keeps the pending call and only pushes its due time back.
KEEP_VALUES = ("last", "first")
# if_running=: what a call does while its key's execution runs. "concurrent" (the default) waits
# out its own quiet period and may run beside it; "after" waits for the run to end (the worker
# says so with a "finished" record), so a key never runs twice at once.
IF_RUNNING_VALUES = ("concurrent", "after")
# collect=: a window's calls collected for one run. A window fires early once it holds this many
# calls: a run's list should fit a worker's memory and one task's time.
MAX_COLLECT_CALLS = 1_000
# ...or when the next call's argument would take its arguments (as JSON) over this many bytes.
MAX_COLLECT_BYTES = 128 * 1024
# The largest bounds a task may set. A changelog slot holds the pending window and the last fired
# execution, each with the collected arguments and the survivor's own (at most max_bytes):
# 4 x 200000 bytes plus a separator per call stays under the 1 MB the broker and producer take.
COLLECT_CALLS_LIMIT = 10_000
COLLECT_BYTES_LIMIT = 200_000
# Calls stamped further from the processor's clock than this are rejected: a wrong clock or unit
# (seconds for milliseconds) would otherwise schedule a call decades away.
MAX_CLOCK_SKEW_MS = 7 * 24 * 3600 * 1000
# A delay or max_wait above ten years is a unit mistake, not a plan.
MAX_DELAY_MS = 10 * 365 * 24 * 3600 * 1000
# Separates the task name from the defer key in a record key; task names never contain it.
KEY_SEPARATOR = "|"

# A \uD800-\uDFFF escape: paired it is fine, alone it makes a str that cannot be UTF-8.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")

EVENT_TYPES = (
    "scheduled", "deferred", "started", "succeeded", "failed", "cancelled", "invalid",
    "retrying",
)
TERMINAL_EVENTS = ("succeeded", "failed", "cancelled")
# How far along its execution each event type is, within one attempt: a reader keeps the
# furthest event of each id (see event_order). `retrying` ends an attempt, not the execution.
EVENT_RANK = {"scheduled": 0, "started": 1, "retrying": 2, "deferred": 3, "invalid": 4,
              **{name: 4 for name in TERMINAL_EVENTS}}


class InvalidRecord(CfStreamError):
    """A record on a cfstream topic does not follow the wire format.

    ``code`` is a short label for metrics (``not_json``, ``missing_field``…); ``reason`` says
    what exactly is wrong, for people.
    """

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(reason)


# Not frozen: a frozen dataclass sets each field through object.__setattr__ (~100 ns a field),
# and the processor builds two or three calls a record. Treat it as immutable all the same.
@dataclass(slots=True)
class Call:
    """One task call. ``args`` and ``kwargs`` hold encoded JSON values (see :mod:`cfstream.codec`)."""

    id: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    submitted_ms: int
    delay_ms: int = 0
    defer_key: str | None = None
    max_wait_ms: int | None = None
    # A retry is the same call (same id) again: its attempt number, and the time before which
    # it must not run (the worker's backoff). First attempts leave both out of the record.
    attempt: int = 1
    not_before_ms: int | None = None
    leading: bool = False  # a quiet key's first call runs at once
    keep: str = "last"  # "first": newer calls push the pending one back instead of replacing it
    # collect=: (max_calls, max_bytes); the call's one argument joins the window's list.
    collect: tuple[int, int] | None = None
    # The arguments of every call of the window, in order (the pending call and its execution).
    collected: list[Any] | None = None
    if_running: str = "concurrent"  # "after": held while the key's last execution runs

    @property
    def key(self) -> str:
        """The record key: the task-scoped defer key, or the execution id when not deferred."""
        if self.defer_key is None:
            return self.id
        return f"{self.task}{KEY_SEPARATOR}{self.defer_key}"

    def to_dict(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies the arguments (a third of submit's time).
        data = {"v": SCHEMA_VERSION, "kind": "call", "id": self.id, "task": self.task,
                "args": self.args, "kwargs": self.kwargs, "submitted_ms": self.submitted_ms,
                "delay_ms": self.delay_ms, "defer_key": self.defer_key,
                "max_wait_ms": self.max_wait_ms}
        if self.attempt != 1:
            data["attempt"] = self.attempt
            data["not_before_ms"] = self.not_before_ms
        if (self.leading or self.keep != "last" or self.collect is not None
                or self.if_running != "concurrent"):
            data["v"] = MODES_VERSION  # modes: fields only when set, and v2
            data.update(_mode_fields(self.leading, self.keep, self.collect, self.if_running))
            if self.collected is not None:
                data["collected"] = self.collected
        return data


def _mode_fields(leading: bool, keep: str, collect: tuple[int, int] | None = None,
                 if_running: str = "concurrent") -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if leading:
        fields["leading"] = True
    if keep != "last":
        fields["keep"] = keep
    if collect is not None:
        fields["collect"] = {"max_calls": collect[0], "max_bytes": collect[1]}
    if if_running != "concurrent":
        fields["if_running"] = if_running
    return fields


def argument_bytes(value: Any) -> int:
    """The size of an encoded argument as JSON, as collect's max_bytes counts it."""
    return len(dumps(value))


class CallRecords:
    """One task's calls-topic records, from arguments already in JSON text: the key and the
    bytes ``dumps(Call(...).to_dict())`` writes, without building the Call and its dict (submit's
    hot path). The parts that are the same for every call of the task are written once."""

    __slots__ = ("_key_head", "_start", "_middle", "_tail", "_deferred", "_deferred_tail")

    def __init__(self, task: str, delay_ms: int, max_wait_ms: int | None,
                 leading: bool = False, keep: str = "last",
                 collect: tuple[int, int] | None = None, if_running: str = "concurrent") -> None:
        modes = "".join(f",{json.dumps(k)}:{dumps(v).decode()}"
                        for k, v in _mode_fields(leading, keep, collect, if_running).items())
        version = MODES_VERSION if modes else SCHEMA_VERSION
        self._key_head = f"{task}{KEY_SEPARATOR}"
        self._start = f'{{"v":{version},"kind":"call","id":"'
        self._middle = f'","task":{encode_basestring(task)},"args":'
        self._tail = f',"delay_ms":{delay_ms},"defer_key":null,"max_wait_ms":null{modes}}}'
        self._deferred = f',"delay_ms":{delay_ms},"defer_key":'
        self._deferred_tail = (',"max_wait_ms":'
                               f'{"null" if max_wait_ms is None else max_wait_ms}{modes}}}')

    def record(self, call_id: str, args_json: str, kwargs_json: str, submitted_ms: int,
               defer_key: str | None) -> tuple[bytes, bytes]:
        """``(key, value)``; ``call_id`` comes from ``new_execution_id`` (nothing to escape)."""
        head = f'{self._start}{call_id}{self._middle}{args_json},' \
               f'"kwargs":{kwargs_json},"submitted_ms":{submitted_ms}'
        if defer_key is None:
            return call_id.encode(), f"{head}{self._tail}".encode()
        return (f"{self._key_head}{defer_key}".encode(),
                f"{head}{self._deferred}{encode_basestring(defer_key)}"
                f"{self._deferred_tail}".encode())


@dataclass(frozen=True, slots=True)
class FiredCall:
    """A call the processor found due: what a worker runs."""

    call: Call
    due_ms: int
    fired_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {**self.call.to_dict(), "kind": "execution", "due_ms": self.due_ms,
                "fired_ms": self.fired_ms}


@dataclass(frozen=True, slots=True)
class Control:
    """A processor instruction about one call: ``tick`` (fire if due), ``cancel`` (drop it
    before it fires), or ``finished`` (a worker: this attempt of its execution ended)."""

    kind: str
    id: str
    reason: str = ""
    attempt: int = 1

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"v": SCHEMA_VERSION, "kind": self.kind, "id": self.id}
        if self.reason:
            data["reason"] = self.reason
        if self.kind == "finished":
            data["attempt"] = self.attempt
        return data


def parse_json(raw: bytes | None, max_bytes: int) -> dict[str, Any]:
    if raw is None:
        raise InvalidRecord("empty", "empty record (no value)")
    if len(raw) > max_bytes:
        raise InvalidRecord("too_large",
                            f"record of {len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        # orjson is strict (UTF-8, no lone surrogates, no NaN) and ~4x faster; the standard
        # library then decides what orjson refused, so it accepts and rejects as before.
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = _parse_json_slowly(raw)
    if not isinstance(data, dict):
        raise InvalidRecord("not_object", f"expected a JSON object, got {type(data).__name__}")
    version = data.get("v")
    if isinstance(version, bool) or version not in READ_VERSIONS:
        raise InvalidRecord("unknown_version",
                            f"unknown schema version {version!r}; this cfstream reads v1 and v2")
    return data


def _parse_json_slowly(raw: bytes) -> Any:
    try:
        data = json.loads(raw.decode("utf-8"))  # RFC 8259: UTF-8 (so no UTF-16, no BOM)
        if _SURROGATE_ESCAPE.search(raw):
            json.dumps(data, ensure_ascii=False).encode("utf-8")  # a lone surrogate raises
    except ValueError as exc:  # also UnicodeError, and ints over Python's digit limit
        raise InvalidRecord("not_json", f"not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRecord("not_json", "JSON nested too deeply") from None
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
    names = {bool: "a boolean", int: "an integer", str: "a string", list: "an array", dict: "an object",
             float: "a number"}
    seq = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join(names.get(k, k.__name__) for k in seq)


def _optional_ms(data: dict[str, Any], name: str, required: bool = False) -> int | None:
    """Whole milliseconds; 5.0 counts (as in JSON Schema: some encoders write integers so)."""
    if data.get(name) is None:
        return _field(data, name, int, required)  # says it is missing, if required
    value = data[name]
    if isinstance(value, float) and value.is_integer():
        return int(value)
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
        return Call(call_id, task, args or [], kwargs or {}, submitted, delay or 0, defer_key,
                    max_wait)
    return _checked_call(data, now_ms)


def trusted_call(data: dict[str, Any]) -> Call:
    """A :class:`Call` from a dict cfstream wrote itself (the processor's own state)."""
    return Call(data["id"], data["task"], data.get("args") or [], data.get("kwargs") or {},
                data["submitted_ms"], data.get("delay_ms") or 0, data.get("defer_key"),
                data.get("max_wait_ms"), data.get("attempt") or 1, data.get("not_before_ms"),
                data.get("leading") or False, data.get("keep") or "last",
                _trusted_bounds(data.get("collect")), data.get("collected"),
                data.get("if_running") or "concurrent")


def _trusted_bounds(collect: dict[str, int] | None) -> tuple[int, int] | None:
    return None if collect is None else (collect["max_calls"], collect["max_bytes"])


def _checked_call(data: dict[str, Any], now_ms: int | None) -> Call:
    call_id = _field(data, "id", str)
    if not call_id:
        raise InvalidRecord("wrong_type", "field 'id' must not be empty")
    task = _field(data, "task", str)
    if not task or KEY_SEPARATOR in task:
        raise InvalidRecord("wrong_type", f"field 'task' must be a non-empty name without {KEY_SEPARATOR!r}")
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
    leading = _field(data, "leading", bool, required=False) or False
    keep = _field(data, "keep", str, required=False)
    keep = "last" if keep is None else keep
    if keep not in KEEP_VALUES:
        raise InvalidRecord("bad_value", f"field 'keep' must be 'last' or 'first', got {keep!r}")
    if (leading or keep != "last") and defer_key is None:
        raise InvalidRecord("missing_field", "leading and keep need a defer_key")
    args = _field(data, "args", list, required=False) or []
    kwargs = _field(data, "kwargs", dict, required=False) or {}
    collect = _collect_bounds(data, defer_key, keep, args, kwargs)
    if_running = _field(data, "if_running", str, required=False)
    if_running = "concurrent" if if_running is None else if_running
    if if_running not in IF_RUNNING_VALUES:
        raise InvalidRecord("bad_value", "field 'if_running' must be 'concurrent' or 'after', "
                                         f"got {if_running!r}")
    if if_running != "concurrent" and (defer_key is None or collect is not None):
        raise InvalidRecord("bad_value", "if_running 'after' needs a defer_key, and no collect")
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
        leading=leading,
        keep=keep,
        collect=collect,
        if_running=if_running,
    )


def _attempt(data: dict[str, Any], required: bool = False) -> int:
    """A call's or finished record's attempt: a whole number from 1 (absent: 1, if optional)."""
    attempt = data.get("attempt")
    if attempt is None:
        if required:
            raise InvalidRecord("missing_field", "missing field 'attempt'")
        return 1
    if isinstance(attempt, float) and attempt.is_integer():
        attempt = int(attempt)
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise InvalidRecord("wrong_type",
                            f"field 'attempt' must be a whole number from 1, got {attempt!r}")
    return attempt


def _collect_bounds(data: dict[str, Any], defer_key: str | None, keep: str, args: list[Any],
                    kwargs: dict[str, Any]) -> tuple[int, int] | None:
    collect = _field(data, "collect", dict, required=False)
    if collect is None:
        return None
    bounds = []
    for name, limit in (("max_calls", COLLECT_CALLS_LIMIT), ("max_bytes", COLLECT_BYTES_LIMIT)):
        value = collect.get(name)
        if isinstance(value, float) and value.is_integer():  # JSON Schema's integer
            value = int(value)
        if type(value) is not int or not 1 <= value <= limit:
            raise InvalidRecord("bad_value", f"collect.{name} must be an integer from 1 to "
                                             f"{limit}, got {value!r}")
        bounds.append(value)
    if defer_key is None or keep != "last":
        raise InvalidRecord("bad_value", "collect needs a defer_key, and keep 'last'")
    if len(args) != 1 or kwargs:
        raise InvalidRecord("bad_value", "a collect call has exactly one argument, in args")
    size = argument_bytes(args[0])
    if size > bounds[1]:
        raise InvalidRecord("too_large", f"a collect call's argument of {size} bytes exceeds "
                                         f"its collect.max_bytes of {bounds[1]}")
    return bounds[0], bounds[1]


def execution_from_dict(data: dict[str, Any]) -> FiredCall:
    call = call_from_dict(data)
    collected = _field(data, "collected", list, required=False)
    if collected is not None:
        call = replace(call, collected=collected)
    return FiredCall(
        call=call,
        due_ms=_ms(data, "due_ms"),
        fired_ms=_ms(data, "fired_ms"),
    )


def control_from_dict(data: dict[str, Any]) -> Control:
    kind = data.get("kind")
    if kind not in ("tick", "cancel", "finished"):
        raise InvalidRecord("unknown_kind", f"unknown record kind {kind!r}; expected 'call', "
                                            "'tick', 'cancel' or 'finished'")
    attempt = _attempt(data, required=True) if kind == "finished" else 1
    return Control(kind=kind, id=_field(data, "id", str),
                   reason=_field(data, "reason", str, required=False) or "", attempt=attempt)


def event(type_: str, call: Call, ts_ms: int, **extra: Any) -> dict[str, Any]:
    """An event record about ``call``; ``extra`` adds the type's own fields. Events of a retry
    name its attempt."""
    if call.attempt != 1:
        extra["attempt"] = call.attempt
    return {"v": SCHEMA_VERSION, "type": type_, "id": call.id, "task": call.task,
            "defer_key": call.defer_key, "ts_ms": ts_ms, **extra}


def event_order(event: dict[str, Any], rank: dict[str, int] = EVENT_RANK) -> tuple[int, int]:
    """How far along its execution an event is: by attempt, then by the ``rank`` of its type
    (KeyError for a type not in it)."""
    attempt = event.get("attempt")
    return (attempt if type(attempt) is int else 1), rank[event["type"]]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An unreadable record as it goes to the dead-letter topic (unchanged, with why and where
    from in its headers), and the ``invalid`` event that says so."""

    reason: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]]
    event_key: bytes
    event: bytes


def dead_letter(error: InvalidRecord, topic: str, partition: int | None, offset: int | None,
                key: bytes | None, value: bytes | None, now_ms: int) -> DeadLetter:
    """The records that park a bad record read from ``topic``. The event is keyed by the
    record's id when it has a readable one, so that its waiters learn why, else by "invalid"."""
    # A lone surrogate (from the record) cannot be UTF-8: escape it.
    reason = error.reason.encode("utf-8", "backslashreplace").decode("utf-8")
    execution_id = _guess_id(value)
    event = {"v": SCHEMA_VERSION, "type": "invalid", "id": execution_id, "reason": reason,
             "topic": topic, "partition": partition, "offset": offset, "ts_ms": now_ms}
    return DeadLetter(
        reason,
        # Kafka clients refuse a record with neither key nor value.
        key=b"" if key is None and value is None else key, value=value,
        headers=[("cfstream-reason", reason.encode()),
                 ("cfstream-source", f"{topic}:{partition}:{offset}".encode())],
        event_key=(execution_id or "invalid").encode(), event=dumps(event))


def _guess_id(raw: bytes | None) -> str | None:
    try:
        ident: Any = loads(raw or b"").get("id")
        if isinstance(ident, str):
            ident.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError, a ValueError
            return ident
        return None
    except (ValueError, AttributeError, TypeError, RecursionError):
        return None
