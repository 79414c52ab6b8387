"""``cf.Execution``: a handle on one submitted call, which may be waited on from any process,
from a thread or from a coroutine (``await execution``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from contextvars import ContextVar
from typing import Any

from cfstream.client import Client, current_client
from cfstream.codec import from_json_value
from cfstream.errors import ExecutionCancelled, ExecutionFailed, SubmitError
from cfstream.events.waiting import Event

# The execution a worker is running in this thread or coroutine.
CURRENT: ContextVar[Execution | None] = ContextVar("cfstream_current_execution", default=None)

# Longest deferral chain followed before giving up: a loop would be a bug, not a long debounce.
MAX_CHAIN = 100_000
# Seconds status() and successor() wait for the events reader to catch up, by default.
STATUS_TIMEOUT = 5.0


class Execution:
    """One call. ``result()`` waits for it, following ``deferred`` events to the call that ran;
    ``await execution`` (or ``await execution.result_async()``) does the same in a coroutine."""

    def __init__(self, id: str, task: str | None = None, client: Client | None = None,
                 attempt: int = 1) -> None:
        self.id = id
        self.task = task
        # Which run of the call this is, inside a task with retries (1: the first).
        self.attempt = attempt
        self._client = client

    def __repr__(self) -> str:
        return f"Execution({self.id!r}, task={self.task!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Execution) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __await__(self) -> Generator[Any, None, Any]:
        return self.result_async().__await__()

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = current_client()
        return self._client

    def result(self, timeout: float | None = None) -> Any:
        """The task's return value.

        Raises ExecutionFailed (the remote error's type, message and traceback),
        ExecutionCancelled, SubmitError (the call never reached Kafka or was rejected), or
        TimeoutError when ``timeout`` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        waiters = self.client.waiters()
        current, after = self.id, None
        for _ in range(MAX_CHAIN):
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            event = waiters.wait(current, left, after)
            done, value = self._settle(current, event, timeout)
            if done:
                return value
            current, after = value
        raise RuntimeError(f"execution {self.id}: deferral chain longer than {MAX_CHAIN}")

    async def result_async(self, timeout: float | None = None) -> Any:
        """:meth:`result` for coroutines; cancelling the awaiting task stops the wait."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        waiters = self.client.waiters()
        current, after = self.id, None
        for _ in range(MAX_CHAIN):
            left = None if deadline is None else max(deadline - loop.time(), 0.0)
            event = await waiters.wait_async(current, left, after)
            done, value = self._settle(current, event, timeout)
            if done:
                return value
            current, after = value
        raise RuntimeError(f"execution {self.id}: deferral chain longer than {MAX_CHAIN}")

    def status(self, timeout: float = STATUS_TIMEOUT) -> str:
        """The latest known state: scheduled, deferred, started, succeeded, failed, cancelled,
        invalid, or unknown (no event read yet)."""
        return _status(self.client.waiters().latest(self.id, timeout))

    async def status_async(self, timeout: float = STATUS_TIMEOUT) -> str:
        """:meth:`status` for coroutines."""
        return _status(await self.client.waiters().latest_async(self.id, timeout))

    def successor(self, timeout: float = STATUS_TIMEOUT) -> Execution | None:
        """The call this one was deferred to, if any."""
        event = self.client.waiters().latest(self.id, timeout)
        if event is None or event["type"] != "deferred":
            return None
        return Execution(event["successor"], task=self.task, client=self._client)

    def _settle(self, current: str, event: Event | None,
                timeout: float | None) -> tuple[bool, Any]:
        """(True, the result) or (False, (successor, when deferred)); raises the outcome's
        error."""
        if event is None:
            raise TimeoutError(
                f"execution {self.id} did not finish within {timeout} s"
                + (f" (waiting on its successor {current})" if current != self.id else "")
            )
        kind = event["type"]
        if kind == "deferred":
            return False, (event["successor"], event.get("ts_ms"))
        if kind == "succeeded":
            return True, from_json_value(event.get("result"))
        if kind == "failed":
            error_info = event.get("error") or {}
            raise ExecutionFailed(
                current,
                error_info.get("type", "Exception"),
                error_info.get("message", ""),
                error_info.get("traceback", ""),
            )
        if kind == "cancelled":
            raise ExecutionCancelled(current, event.get("reason", ""))
        if kind == "undelivered":
            raise SubmitError(event.get("reason", f"call {current} never reached Kafka"))
        raise SubmitError(f"the processor rejected call {current}: {event.get('reason', '')}")


def _status(event: Event | None) -> str:
    return "unknown" if event is None else str(event["type"])


def current_execution() -> Execution | None:
    """Inside a task on a worker: the execution being run (its ``.id`` is stable across retries
    of delivery, so it makes a good idempotency key). Elsewhere: None."""
    return CURRENT.get()
