"""``cf.Execution``: a handle on one submitted call, which may be waited on from any process,
from a thread or from a coroutine (``await execution``)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Generator
from contextvars import ContextVar
from typing import Any

from confluent_kafka import KafkaError

from cfstream.client import Client, current_client
from cfstream.codec import from_json_value
from cfstream.errors import CfStreamError, ExecutionCancelled, ExecutionFailed, SubmitError
from cfstream.events.known import Event
from cfstream.events.watches import Watch
from cfstream.wire import Control, record_key

# The execution a worker is running in this thread or coroutine.
CURRENT: ContextVar[Execution | None] = ContextVar("cfstream_current_execution", default=None)

# Longest deferral chain followed before giving up: a loop would be a bug, not a long debounce.
MAX_CHAIN = 100_000
# Seconds status() and successor() wait for the events reader to catch up, by default.
STATUS_TIMEOUT = 5.0
# Seconds cancel() waits for the processor's answer, by default.
CANCEL_TIMEOUT = 30.0
# How often cancel() reads a call's latest event again until the processor has answered: first,
# then at most (each look asks the broker for the partition's end).
CANCEL_POLL = 0.02
CANCEL_POLL_MAX = 0.25


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
        # (the id that ran, its final event) once known: asked again, the answer is at hand.
        self._outcome: tuple[str, Event] | None = None

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
        if self._outcome is not None:
            return self._settle(*self._outcome, timeout)[1]
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
        raise _too_long(self.id)

    async def result_async(self, timeout: float | None = None) -> Any:
        """:meth:`result` for coroutines; cancelling the awaiting task stops the wait."""
        if self._outcome is not None:
            return self._settle(*self._outcome, timeout)[1]
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
        raise _too_long(self.id)

    def exception(self, timeout: float | None = None) -> CfStreamError | None:
        """The error :meth:`result` would raise for the outcome (ExecutionFailed,
        ExecutionCancelled, SubmitError), or None if the task returned; waits like it."""
        try:
            self.result(timeout)
        except (ExecutionFailed, ExecutionCancelled, SubmitError) as error:
            return error
        return None

    def done(self) -> bool:
        """Whether the outcome is known without waiting (read already by this process)."""
        if self._outcome is not None:
            return True
        waiters = self.client.waiters()
        current = self.id
        for _ in range(MAX_CHAIN):
            event = waiters.known(current, settled=True)
            if event is None:
                return False
            if event["type"] != "deferred":
                self._outcome = (current, event)
                return True
            current = event["successor"]
        return False

    def status(self, timeout: float = STATUS_TIMEOUT) -> str:
        """The latest state: scheduled, deferred, started, retrying, succeeded, failed,
        cancelled, invalid, or unknown (the call has no event yet). Reads the id's events up to
        where they end now; raises TimeoutError if that takes over ``timeout`` seconds."""
        return _status(self.client.waiters().latest(self.id, timeout))

    async def status_async(self, timeout: float = STATUS_TIMEOUT) -> str:
        """:meth:`status` for coroutines."""
        return _status(await self.client.waiters().latest_async(self.id, timeout))

    def cancel(self, reason: str = "", timeout: float = CANCEL_TIMEOUT) -> bool:
        """Drop the call before it runs: the pending call of its chain (this one, or the call
        that replaced it). Its waiters, and those of every call it replaced, get
        ExecutionCancelled with ``reason``. A call waiting for its retry is cancelled too.

        True once the processor cancelled it; False when the call started (or ended) first.
        TimeoutError if neither is known within ``timeout`` seconds: the call has no event
        (not scheduled yet, or its events are past the topic's retention), or it fired and
        waits for a worker (a processor ignores the cancel of a call that left it), or no
        processor runs. A cancel sent stays on the calls topic: a processor that reads it later
        still cancels the call if it is pending then. SubmitError if Kafka refused it."""
        deadline = time.monotonic() + timeout
        waiters = self.client.waiters()
        current, hops, pause = self.id, 0, CANCEL_POLL
        cancelled_attempt = 0  # the attempt of ``current`` a cancel was sent for
        sent: list[list[KafkaError]] = []  # per cancel sent, Kafka's refusal if any
        while True:
            try:
                event = waiters.latest(current, max(deadline - time.monotonic(), 0.0))
            except TimeoutError:  # the reader did not catch up in time: what it knows
                event = waiters.known(current)
            refused = [error for errors in sent for error in errors]
            if refused:
                raise SubmitError(f"a cancel of {current} did not reach Kafka: {refused[0]}")
            kind = None if event is None else event["type"]
            if event is not None and kind == "deferred":  # replaced: the newer call goes
                current, hops, cancelled_attempt = event["successor"], hops + 1, 0
                if hops > MAX_CHAIN:
                    raise _too_long(self.id)
                continue
            if kind == "cancelled":
                return True
            if kind not in (None, "scheduled", "retrying"):
                return False  # started, or ended
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no answer to the cancel of {current} within {timeout} s: it fired and "
                    "waits for a worker, or no processor runs" if cancelled_attempt else
                    f"{current} has no event within {timeout} s: not scheduled yet (is a "
                    "processor running?), or its events are past the topic's retention")
            # The attempt pending: a retrying event's is the next one (one that ran and failed
            # between two looks, after an earlier cancel came too late for it).
            pending = 0 if event is None else (
                (event.get("attempt") or 1) + (kind == "retrying"))
            if event is not None and pending > cancelled_attempt:  # (the calls topic keeps
                # the cancel after anything already there for the key, a retry included)
                sent.append(self.client.send_control(
                    record_key(current, event["task"], event.get("defer_key")),
                    Control(kind="cancel", id=current, reason=reason or "cancelled")))
                cancelled_attempt = pending
            time.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
            pause = min(pause * 2, CANCEL_POLL_MAX)

    async def cancel_async(self, reason: str = "", timeout: float = CANCEL_TIMEOUT) -> bool:
        """:meth:`cancel` for coroutines (in a thread: cancelling the awaiting task does not
        take the cancel back)."""
        return await asyncio.to_thread(self.cancel, reason, timeout)

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
        self._outcome = (current, event)
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


class Follower:
    """Follows one execution's deferral chain to its outcome without a thread of its own:
    ``on_done(execution)`` is called once, from whichever thread learns the outcome (the one
    calling :meth:`start` if it is known already). :meth:`stop` lets go of the wait."""

    def __init__(self, execution: Execution, on_done: Callable[[Execution], None]) -> None:
        self.execution = execution
        self.on_done = on_done
        self._waiters = execution.client.waiters()
        self._lock = threading.RLock()
        self._watch: Watch | None = None
        self._current = execution.id
        self._hops = 0
        self._stopped = False
        self._finished = False

    def start(self) -> None:
        with self._lock:
            finished = self.execution.done() or self._follow(self.execution.id, None)
            finished = self._finish(finished)
        if finished:
            self.on_done(self.execution)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            watch, self._watch = self._watch, None
        if watch is not None:
            self._waiters.release(watch)

    def _follow(self, current: str, after: int | None) -> bool:
        """Along the chain as far as it is known; True at its end. Called with the lock."""
        while self._hops < MAX_CHAIN:
            self._current = current
            event, watch = self._waiters.watch(current, after, self._resolver(current))
            if watch is not None:
                self._watch = watch
                return False
            assert event is not None  # noqa: S101 - watch() returns one of the two
            if event["type"] != "deferred":
                self.execution._outcome = (current, event)
                return True
            current, after = event["successor"], event.get("ts_ms")
            self._hops += 1
        return True  # result() itself will say the chain is too long

    def _resolver(self, current: str) -> Callable[[Event | None], None]:
        return lambda event: self._resolved(current, event)

    def _finish(self, finished: bool) -> bool:
        """True the first time only: ``on_done`` is called once. Called with the lock."""
        if not finished or self._finished:
            return False
        self._finished = True
        return True

    def _resolved(self, current: str, event: Event | None) -> None:
        with self._lock:
            if self._stopped or self._finished or current != self._current:
                return
            watch, self._watch = self._watch, None
            if watch is not None:
                self._waiters.release(watch)
            if event is None:  # the client was closed: the wait is over (result() says so)
                finished = True
            elif event["type"] == "deferred":
                self._hops += 1
                finished = self._follow(event["successor"], event.get("ts_ms"))
            else:
                self.execution._outcome = (current, event)
                finished = True
            finished = self._finish(finished)
        if finished:
            self.on_done(self.execution)


def _too_long(execution_id: str) -> RuntimeError:
    return RuntimeError(f"execution {execution_id}: deferral chain longer than {MAX_CHAIN}")


def _status(event: Event | None) -> str:
    return "unknown" if event is None else str(event["type"])


def current_execution() -> Execution | None:
    """Inside a task on a worker: the execution being run (its ``.id`` is stable across retries
    of delivery, so it makes a good idempotency key). Elsewhere: None."""
    return CURRENT.get()
