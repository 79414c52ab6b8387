"""The records cfstream writes: calls (:class:`Call`, and :class:`CallRecords` for submit's hot
path), executions (:class:`FiredCall`) and control records (:class:`Control`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

from cfstream.codec import dumps
from cfstream.wire.modes import NO_MODES, Modes

SCHEMA_VERSION = 1
# A call that sets a deferring mode (see Modes) is written as v2: a v1-only reader rejects it
# (dead letter) instead of ignoring the field and running the wrong call at the wrong time.
MODES_VERSION = 2
# A delay or max_wait above ten years is a unit mistake, not a plan.
MAX_DELAY_MS = 10 * 365 * 24 * 3600 * 1000
# Separates the task name from the defer key in a record key; task names never contain it.
KEY_SEPARATOR = "|"


def record_key(execution_id: str, task: str, defer_key: str | None) -> str:
    """A call's key on the calls topic (and its control records'): the task-scoped defer key,
    or the execution id when it is not deferred."""
    if defer_key is None:
        return execution_id
    return f"{task}{KEY_SEPARATOR}{defer_key}"


# Not frozen: a frozen dataclass sets each field through object.__setattr__ (~100 ns a field),
# and the processor builds two or three calls a record. Treat it as immutable all the same.
@dataclass(slots=True)
class Call:
    """One task call. ``args`` and ``kwargs`` hold encoded JSON values (see
    :mod:`cfstream.codec`)."""

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
    # The W3C trace context the call belongs to (the submitter's span, on an execution the
    # processor's); only a valid one is kept (see reading.traceparent).
    traceparent: str | None = None

    @property
    def key(self) -> str:
        """The record key: the task-scoped defer key, or the execution id when not deferred."""
        return record_key(self.id, self.task, self.defer_key)

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
        if self.traceparent is not None:
            data["traceparent"] = self.traceparent
        return data


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
               defer_key: str | None, traceparent: str | None = None) -> tuple[bytes, bytes]:
        """``(key, value)``; ``call_id`` comes from ``new_execution_id`` and ``traceparent``
        from a propagator (nothing to escape in either)."""
        head = f'{self._start}{call_id}{self._middle}{args_json},' \
               f'"kwargs":{kwargs_json},"submitted_ms":{submitted_ms}'
        if defer_key is None:
            key, value = call_id.encode(), f"{head}{self._tail}".encode()
        else:
            key, value = (f"{self._key_head}{defer_key}".encode(),
                          f"{head}{self._deferred}{encode_basestring(defer_key)}"
                          f"{self._deferred_tail}".encode())
        if traceparent is None:
            return key, value
        return key, b'%s,"traceparent":"%s"}' % (value[:-1], traceparent.encode())


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
