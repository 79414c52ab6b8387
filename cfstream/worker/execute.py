"""Running one execution's task and describing the outcome as an event payload."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

from cfstream.codec import from_json_value, to_json_value
from cfstream.execution import CURRENT, Execution
from cfstream.task import Task
from cfstream.wire import Call

LOST = "WorkerLost"


@dataclass(frozen=True, slots=True)
class Outcome:
    """``succeeded`` with a JSON result, or ``failed`` with an error description (and the
    exception the task raised, if it raised one: the task's retries may apply to it)."""

    type: str
    fields: dict[str, Any]
    error: BaseException | None = None

    @property
    def lost(self) -> bool:
        """The worker that ran it stopped before it could report (see :func:`lost`)."""
        return self.type == "failed" and self.fields["error"]["type"] == LOST


def lost(worker: object) -> Outcome:
    """The outcome of an attempt begun by ``worker``, which stopped before reporting it."""
    return failure(LOST, f"worker {worker} stopped while running this execution, before "
                         "reporting its outcome; it is not run again so that it never runs twice "
                         "(give the task retries to run it again)")


def prepare(task: Task[Any, Any] | None, call: Call) -> tuple[Any, Outcome | None]:
    """The callable to run (a coroutine for async tasks), or a ready ``failed`` outcome."""
    if task is None:
        return None, failure(
            "TaskNotRegistered",
            f"no task {call.task!r} is registered in this worker. The workers of a topic "
            "prefix share every execution on it: start each with every module that defines "
            "tasks (cfstream worker MODULE...), or run other tasks' workers under a prefix of "
            "their own",
        )
    try:
        if call.collected is not None:  # collect=True: one list of every call's argument
            args, kwargs = [from_json_value(call.collected)], {}
        else:
            args = from_json_value(call.args)
            kwargs = from_json_value(call.kwargs)
        task.arguments.check_fit(args, kwargs)
    except Exception as exc:  # malformed tagged values raise all sorts; none may stop a worker
        return None, failure("InvalidArguments", f"arguments do not fit {call.task}: "
                                                 f"{type(exc).__name__}: {exc}")
    handle = Execution(call.id, task=call.task, attempt=call.attempt)
    if task.is_async:
        return _async_as(handle, task.fn, args, kwargs), None

    def run() -> Any:
        token = CURRENT.set(handle)
        try:
            return task.fn(*args, **kwargs)
        finally:
            CURRENT.reset(token)

    return run, None


async def _async_as(handle: Execution, fn: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    CURRENT.set(handle)  # this coroutine runs in a task of its own: the context is its own
    return await fn(*args, **kwargs)


def success(value: Any, task_name: str) -> Outcome:
    try:
        encoded = to_json_value(value, f"result of {task_name}")
    except TypeError as exc:
        return failure("ResultNotSerializable", str(exc))
    return Outcome("succeeded", {"result": encoded})


def failure(error_type: str, message: str, trace: str = "") -> Outcome:
    return Outcome("failed", {"error": {"type": error_type, "message": message,
                                        "traceback": trace}})


def from_exception(exc: BaseException) -> Outcome:
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else (
        f"{kind.__module__}.{kind.__qualname__}")
    trace = "".join(traceback.format_exception(exc))
    return Outcome("failed", failure(name, str(exc), trace).fields, exc)
