"""``cf.Execution``: a handle on one submitted call, which may be waited on from any process."""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from cfstream.codec import from_json_value
from cfstream.errors import ExecutionCancelled, ExecutionFailed, SubmitError

if TYPE_CHECKING:
    from cfstream.client import Client

# The execution a worker is running in this thread or coroutine.
CURRENT: ContextVar[Execution | None] = ContextVar("cfstream_current_execution", default=None)

# Longest deferral chain followed before giving up: a loop would be a bug, not a long debounce.
MAX_CHAIN = 100_000


class Execution:
    """One call. ``result()`` waits for it, following ``deferred`` events to the call that ran."""

    def __init__(self, id: str, task: str | None = None, client: Client | None = None) -> None:
        self.id = id
        self.task = task
        self._client = client

    def __repr__(self) -> str:
        return f"Execution({self.id!r}, task={self.task!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Execution) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def client(self) -> Client:
        if self._client is None:
            from cfstream.client import current_client

            self._client = current_client()
        return self._client

    def result(self, timeout: float | None = None) -> Any:
        """The task's return value.

        Raises ExecutionFailed (the remote error's type, message and traceback),
        ExecutionCancelled, or TimeoutError when ``timeout`` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        reader = self.client.reader()
        current = self.id
        for _ in range(MAX_CHAIN):
            error = self.client.delivery_error(current)
            if error is not None:
                raise SubmitError(f"call {current} never reached Kafka: {error}")
            event = reader.wait(current, deadline)
            if event is None:
                raise TimeoutError(
                    f"execution {self.id} did not finish within {timeout} s"
                    + (f" (waiting on its successor {current})" if current != self.id else "")
                )
            kind = event["type"]
            if kind == "deferred":
                current = event["successor"]
            elif kind == "succeeded":
                return from_json_value(event.get("result"))
            elif kind == "failed":
                error_info = event.get("error") or {}
                raise ExecutionFailed(
                    current,
                    error_info.get("type", "Exception"),
                    error_info.get("message", ""),
                    error_info.get("traceback", ""),
                )
            elif kind == "cancelled":
                raise ExecutionCancelled(current, event.get("reason", ""))
            elif kind == "invalid":
                raise SubmitError(f"the processor rejected call {current}: "
                                  f"{event.get('reason', '')}")
        raise RuntimeError(f"execution {self.id}: deferral chain longer than {MAX_CHAIN}")

    def status(self, timeout: float = 5.0) -> str:
        """The latest known state: scheduled, deferred, started, succeeded, failed, cancelled,
        or unknown (no event read yet)."""
        event = self.client.reader().latest(self.id, timeout)
        return "unknown" if event is None else str(event["type"])

    def successor(self, timeout: float = 5.0) -> Execution | None:
        """The call this one was deferred to, if any."""
        event = self.client.reader().latest(self.id, timeout)
        if event is None or event["type"] != "deferred":
            return None
        return Execution(event["successor"], task=self.task, client=self._client)


def current_execution() -> Execution | None:
    """Inside a task on a worker: the execution being run (its ``.id`` is stable across retries
    of delivery, so it makes a good idempotency key). Elsewhere: None."""
    return CURRENT.get()
