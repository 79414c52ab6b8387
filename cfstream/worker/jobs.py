"""An execution as a worker holds it: the fired call, and where on the executions topic it lay."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from cfstream.wire import Call, FiredCall

if TYPE_CHECKING:
    from cfstream.worker.execute import Outcome


class Job:
    """An execution and where it lay. ``id`` and ``key`` are read a dozen times an execution, so
    they are worked out once."""

    __slots__ = ("execution", "partition", "offset", "call", "id", "key", "cleared_at")

    def __init__(self, execution: FiredCall, partition: int, offset: int) -> None:
        call = execution.call
        self.execution = execution
        self.partition = partition
        self.offset = offset
        self.call: Call = call
        self.id: str = call.id
        # What the backlog merges by: a collected run holds others' arguments, so it never
        # merges (its id is its key).
        self.key: str = call.id if call.collected is not None else call.key
        # How many events the worker had read when none of them stopped this job from running
        # (see Dedupe.elsewhere); -1: not checked yet.
        self.cleared_at = -1

    def __repr__(self) -> str:
        return f"Job({self.id!r}, partition={self.partition}, offset={self.offset})"

    @property
    def submitted_ms(self) -> int:
        return self.call.submitted_ms

    @property
    def attempt(self) -> int:
        return self.call.attempt


class Tracing(Protocol):
    """:class:`cfstream.worker.tracing.RunSpans`, when the worker's tracing is on (a module that
    loads OpenTelemetry, so it is not imported here)."""

    def started(self, job: Job, ts_ms: int) -> None: ...

    def current(self, job: Job) -> AbstractContextManager[Any]: ...

    def traceparent(self, job: Job) -> str | None: ...

    def ended(self, job: Job, ts_ms: int, outcome: Outcome, retry: Call | None = None) -> None:
        ...

    def deferred(self, loser: Job, winner: Job, ts_ms: int) -> None: ...
