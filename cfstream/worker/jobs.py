"""An execution as a worker holds it: the fired call, and where on the executions topic it lay."""

from __future__ import annotations

from dataclasses import dataclass

from cfstream.wire import Call, FiredCall


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
