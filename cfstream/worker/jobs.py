"""An execution as a worker holds it: the fired call, and where on the executions topic it lay."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from cfstream.wire import Call, FiredCall

if TYPE_CHECKING:
    from cfstream.worker.execute import Outcome


@dataclass(frozen=True, slots=True)
class Job:
    execution: FiredCall
    partition: int
    offset: int

    @property
    def call(self) -> Call:
        return self.execution.call

    @property
    def id(self) -> str:
        return self.execution.call.id

    @property
    def key(self) -> str:
        """What the backlog merges by: a collected run holds others' arguments, so it never
        merges (its id is its key)."""
        call = self.execution.call
        return call.id if call.collected is not None else call.key

    @property
    def submitted_ms(self) -> int:
        return self.execution.call.submitted_ms

    @property
    def attempt(self) -> int:
        return self.execution.call.attempt


class Tracing(Protocol):
    """:class:`cfstream.worker.tracing.RunSpans`, when the worker's tracing is on (a module that
    loads OpenTelemetry, so it is not imported here)."""

    def started(self, job: Job, ts_ms: int) -> None: ...

    def current(self, job: Job) -> AbstractContextManager[Any]: ...

    def traceparent(self, job: Job) -> str | None: ...

    def ended(self, job: Job, ts_ms: int, outcome: Outcome, retry: Call | None = None) -> None:
        ...

    def deferred(self, loser: Job, winner: Job, ts_ms: int) -> None: ...
