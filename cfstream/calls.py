"""Submitting by task name, for services that do not have the task's code:
``cf.submit("billing.tasks:charge", [order_id], delay=60)``."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

from cfstream.client import Client, current_client
from cfstream.clock import now_ms
from cfstream.codec import to_json_value
from cfstream.errors import SubmitError
from cfstream.execution import Execution
from cfstream.ids import new_execution_id
from cfstream.task import to_ms
from cfstream.tracing import submitting
from cfstream.wire import KEY_SEPARATOR, NO_MODES, Call, Collect, Modes, ModesError


def submit(task: str, args: list[Any] | tuple[Any, ...] = (),
           kwargs: dict[str, Any] | None = None, *,
           delay: dt.timedelta | float | int = 0, defer_key: str | None = None,
           max_wait: dt.timedelta | float | int | None = None,
           leading: bool = False, keep: str = "last", collect: bool | Collect = False,
           if_running: str = "concurrent", client: Client | None = None) -> Execution:
    """Submit a call to the task registered as ``"module:function"`` on the workers; through
    ``client``, or the process's client. ``leading``, ``keep``, ``collect`` and ``if_running``
    need a ``defer_key`` (as on ``@cf.task``; ``leading`` also a delay; ``collect`` exactly one
    argument)."""
    if not task or KEY_SEPARATOR in task:
        raise SubmitError(f"task name {task!r} must be non-empty without {KEY_SEPARATOR!r}")
    delay_ms = to_ms(delay, "delay") or 0
    max_wait_ms = to_ms(max_wait, "max_wait")
    if max_wait_ms is not None and (defer_key is None or max_wait_ms <= delay_ms):
        raise SubmitError("max_wait needs a defer_key and must be greater than delay")
    if defer_key is not None and not isinstance(defer_key, str):
        raise SubmitError(f"defer_key must be a string, got {type(defer_key).__name__}")
    try:
        modes = Modes.checked(leading, keep, collect, if_running,
                              deferred=defer_key is not None, delay_ms=delay_ms)
        positional = {f"#{i}": value for i, value in enumerate(args)}
        call = new_call(task, positional, kwargs or {}, delay_ms=delay_ms, defer_key=defer_key,
                        max_wait_ms=max_wait_ms, modes=modes)
        if modes.collect is not None:
            modes.collect.check_item(call.args, call.kwargs)
    except ModesError as exc:
        raise SubmitError(f"{task}: {exc}") from None
    client = client or current_client()
    span = submitting(task, call.id, defer_key, client.settings)
    if span is None:
        client.publish(call)
    else:
        with span:
            client.publish(replace(call, traceparent=span.traceparent))
    return Execution(call.id, task=task, client=client)


def new_call(task: str, args: dict[str, Any], kwargs: dict[str, Any], *, delay_ms: int,
             defer_key: str | None, max_wait_ms: int | None, modes: Modes = NO_MODES) -> Call:
    """A call stamped now. ``args`` maps a name for each positional argument (used in errors)
    to its value, in order."""
    now = now_ms()
    return Call(
        id=new_execution_id(now),
        task=task,
        args=[to_json_value(v, f"{task}: argument {name!r}") for name, v in args.items()],
        kwargs={k: to_json_value(v, f"{task}: argument {k!r}") for k, v in kwargs.items()},
        submitted_ms=now,
        delay_ms=delay_ms,
        defer_key=defer_key,
        max_wait_ms=max_wait_ms,
        modes=modes,
    )
