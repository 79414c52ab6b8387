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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from json.encoder import encode_basestring
from typing import Any

import orjson

from cfstream.codec import dumps, loads
from cfstream.errors import CfStreamError, ConfigurationError

SCHEMA_VERSION = 1
# A call that sets a deferring mode (see Modes) is written as v2: a v1-only reader rejects it
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


class ModesError(ConfigurationError):
    """Deferring modes that are not valid, or that a call cannot take. ``@cf.task`` and
    ``cf.Collect`` raise it as it is; ``cf.submit`` raises it as a SubmitError and the record
    reader as an InvalidRecord with its ``code`` and ``reason``."""

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Collect:
    """``collect=cf.Collect(max_calls=..., max_bytes=...)``: a window's run gets every call's
    argument, and fires early once it holds ``max_calls`` of them or the next one would take
    them (as JSON) over ``max_bytes``."""

    max_calls: int = MAX_COLLECT_CALLS
    max_bytes: int = MAX_COLLECT_BYTES

    def __post_init__(self) -> None:
        for name, value, limit in (("max_calls", self.max_calls, COLLECT_CALLS_LIMIT),
                                   ("max_bytes", self.max_bytes, COLLECT_BYTES_LIMIT)):
            if type(value) is not int or not 1 <= value <= limit:
                raise ModesError("bad_value", f"collect.{name} must be an integer from 1 to "
                                              f"{limit}, got {value!r}")

    def check_item(self, args: Sequence[Any], kwargs: Mapping[str, Any] | None) -> None:
        """Raise ModesError unless a call's (encoded) arguments are one item of at most
        ``max_bytes`` as JSON."""
        if len(args) != 1 or kwargs:
            raise ModesError("bad_value", "a collect call has exactly one argument, in args")
        size = argument_bytes(args[0])
        if size > self.max_bytes:
            raise ModesError("too_large", f"a collect call's argument of {size} bytes exceeds "
                                          f"its collect.max_bytes of {self.max_bytes}")


@dataclass(frozen=True, slots=True)
class Modes:
    """A call's deferring modes, all for deferred calls (docs/deferring.md). A call that sets
    none has :data:`NO_MODES` and is written as v1; any mode makes its record v2, with a flat
    field for each mode set.

    ``Modes(...)`` trusts its fields, as ``Call(...)`` does. Options from a user or a record
    go through :meth:`checked`: the decorator, ``cf.submit`` and the record reader all check
    them there (and a Task its own with :meth:`check`), so each rule and its message is
    written once.
    """

    leading: bool = False  # a quiet key's first call runs at once
    keep: str = "last"  # "first": newer calls push the pending one back instead of replacing it
    collect: Collect | None = None  # the window's run gets every call's one argument
    if_running: str = "concurrent"  # "after": held while the key's last execution runs

    @classmethod
    def checked(cls, leading: Any = False, keep: Any = "last", collect: Any = None,
                if_running: Any = "concurrent", *, deferred: bool,
                delay_ms: int | None = None) -> Modes:
        """Modes from options as given (``collect``: True, False, None or a Collect), checked
        (ModesError): see :meth:`check`."""
        bounds = Collect() if collect is True else None if collect is False else collect
        _check(leading, keep, bounds, if_running, deferred, delay_ms)
        fields = (leading, keep, None if bounds is None else bounds.max_calls,
                  None if bounds is None else bounds.max_bytes, if_running)
        return _shared_modes.get(fields) or _share(fields)

    def check(self, *, deferred: bool, delay_ms: int | None = None) -> None:
        """Raise ModesError for a bad value, for modes that do not go together, or for modes on
        a call that is not deferred (``deferred``: it has a defer key). With ``delay_ms``, also
        insist that a leading call has a quiet period, as the client does (the processor
        does not)."""
        _check(self.leading, self.keep, self.collect, self.if_running, deferred, delay_ms)

    def record_fields(self) -> dict[str, Any]:
        """The record's fields for the modes set, in the order they are written."""
        fields: dict[str, Any] = {}
        if self.leading:
            fields["leading"] = True
        if self.keep != "last":
            fields["keep"] = self.keep
        if self.collect is not None:
            fields["collect"] = {"max_calls": self.collect.max_calls,
                                 "max_bytes": self.collect.max_bytes}
        if self.if_running != "concurrent":
            fields["if_running"] = self.if_running
        return fields


NO_MODES = Modes()  # what a call without modes has; Call.to_dict looks no further


def _check(leading: Any, keep: Any, collect: Any, if_running: Any, deferred: bool,
           delay_ms: int | None) -> None:
    """Which modes are valid: see Modes.check."""
    if type(leading) is not bool:
        raise ModesError("wrong_type", f"leading must be True or False, got {leading!r}")
    if keep not in KEEP_VALUES:
        raise ModesError("bad_value", f"keep must be 'last' or 'first', got {keep!r}")
    if if_running not in IF_RUNNING_VALUES:
        raise ModesError("bad_value",
                         f"if_running must be 'concurrent' or 'after', got {if_running!r}")
    if collect is not None and not isinstance(collect, Collect):
        raise ModesError("wrong_type",
                         f"collect must be True, False or cf.Collect(...), got {collect!r}")
    if not deferred:
        for name, on in (("leading=True", leading), ("keep='first'", keep == "first"),
                         ("collect", collect is not None),
                         ("if_running='after'", if_running == "after")):
            if on:
                raise ModesError("missing_field", f"{name} only applies to deferred calls: "
                                                  "set defer on the task (a defer_key on a call) "
                                                  "too")
    if collect is not None and keep == "first":
        raise ModesError("bad_value",
                         "collect runs every call's argument: keep='first' does not apply")
    if collect is not None and if_running == "after":
        raise ModesError("bad_value", "if_running='after' does not take collect: a window held "
                                      "while a run lasts could not fire early at its bounds")
    if leading and delay_ms is not None and delay_ms <= 0:
        raise ModesError("bad_value", "leading=True needs a delay: it is the quiet period after "
                                      "the leading run in which calls collapse into one "
                                      "trailing run")


# A process meets a handful of mode combinations, one per task or so: each is made once and
# shared, so a call with modes costs the processor a lookup, not two frozen objects. Bounded,
# as a producer could send any number of collect bounds.
_SHARED_LIMIT = 1_000
_shared_modes: dict[tuple[Any, ...], Modes] = {
    (False, "last", None, None, "concurrent"): NO_MODES}
_shared_bounds: dict[tuple[int, int], Collect] = {}


def _share(fields: tuple[Any, ...]) -> Modes:
    """Modes of ``(leading, keep, max_calls, max_bytes, if_running)`` (checked, or cfstream's
    own; None bounds: no collect), made to be shared; callers look in _shared_modes first."""
    leading, keep, max_calls, max_bytes, if_running = fields
    collect = None if max_calls is None else collect_bounds(max_calls, max_bytes)
    modes = Modes(leading, keep, collect, if_running)
    if len(_shared_modes) < _SHARED_LIMIT:
        _shared_modes[fields] = modes
    return modes


def collect_bounds(max_calls: Any, max_bytes: Any) -> Collect:
    """``Collect(max_calls, max_bytes)`` (so checked, ModesError), shared with calls of the
    same bounds."""
    if type(max_calls) is not int or type(max_bytes) is not int:
        return Collect(max_calls, max_bytes)  # raises
    bounds = _shared_bounds.get((max_calls, max_bytes))
    if bounds is None:
        bounds = Collect(max_calls, max_bytes)
        if len(_shared_bounds) < _SHARED_LIMIT:
            _shared_bounds[max_calls, max_bytes] = bounds
    return bounds


def trusted_modes(data: dict[str, Any]) -> Modes:
    """The modes of a record cfstream wrote itself (the processor's own state), unchecked."""
    leading, keep, collect, if_running = (data.get("leading"), data.get("keep"),
                                          data.get("collect"), data.get("if_running"))
    if not leading and keep is None and collect is None and if_running is None:
        return NO_MODES
    fields = (leading is True, keep or "last", None if collect is None else collect["max_calls"],
              None if collect is None else collect["max_bytes"], if_running or "concurrent")
    return _shared_modes.get(fields) or _share(fields)


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
    modes: Modes = NO_MODES
    # collect: the arguments of every call of the window, in order (the pending call and its
    # execution).
    collected: list[Any] | None = None

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
        if self.modes is not NO_MODES and (modes := self.modes.record_fields()):
            data["v"] = MODES_VERSION  # modes: fields only when set, and v2
            data.update(modes)
            if self.collected is not None:
                data["collected"] = self.collected
        return data


def argument_bytes(value: Any) -> int:
    """The size of an encoded argument as JSON, as collect's max_bytes counts it."""
    return len(dumps(value))


class CallRecords:
    """One task's calls-topic records, from arguments already in JSON text: the key and the
    bytes ``dumps(Call(...).to_dict())`` writes, without building the Call and its dict (submit's
    hot path). The parts that are the same for every call of the task are written once."""

    __slots__ = ("_key_head", "_start", "_middle", "_tail", "_deferred", "_deferred_tail")

    def __init__(self, task: str, delay_ms: int, max_wait_ms: int | None,
                 modes: Modes = NO_MODES) -> None:
        fields = "".join(f",{json.dumps(k)}:{dumps(v).decode()}"
                         for k, v in modes.record_fields().items())
        version = MODES_VERSION if fields else SCHEMA_VERSION
        self._key_head = f"{task}{KEY_SEPARATOR}"
        self._start = f'{{"v":{version},"kind":"call","id":"'
        self._middle = f'","task":{encode_basestring(task)},"args":'
        self._tail = f',"delay_ms":{delay_ms},"defer_key":null,"max_wait_ms":null{fields}}}'
        self._deferred = f',"delay_ms":{delay_ms},"defer_key":'
        self._deferred_tail = (',"max_wait_ms":'
                               f'{"null" if max_wait_ms is None else max_wait_ms}{fields}}}')

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
        return Call(call_id, task, args or [], kwargs or {}, submitted, delay or 0, defer_key,
                    max_wait)
    return _checked_call(data, now_ms)


def trusted_call(data: dict[str, Any]) -> Call:
    """A :class:`Call` from a dict cfstream wrote itself (the processor's own state)."""
    return Call(data["id"], data["task"], data.get("args") or [], data.get("kwargs") or {},
                data["submitted_ms"], data.get("delay_ms") or 0, data.get("defer_key"),
                data.get("max_wait_ms"), data.get("attempt") or 1, data.get("not_before_ms"),
                trusted_modes(data), data.get("collected"))


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
