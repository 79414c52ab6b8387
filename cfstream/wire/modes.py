"""A call's deferring modes (leading, keep, collect, if_running) as one value, :class:`Modes`,
and the one place where they are checked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cfstream.codec import dumps
from cfstream.errors import ConfigurationError

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


def argument_bytes(value: Any) -> int:
    """The size of an encoded argument as JSON, as collect's max_bytes counts it."""
    return len(dumps(value))
