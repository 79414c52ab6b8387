"""What a key's slot keeps for tracing, as plain data (the spans themselves are made by
:mod:`cfstream.processor.tracing`, only when the processor's tracing is on).

A window's pending call has a span from its ``scheduled`` time to when it leaves the table; the
traced calls the window took in (deferred into it) are kept until then, so that their spans can
link to the execution that ran them. At most :data:`MAX_ABSORBED` are kept: a window's state is
written to the changelog on every call, and must stay small.
"""

from __future__ import annotations

from dataclasses import dataclass

# Traced calls a window keeps for its links; the ones after get their span when deferred.
MAX_ABSORBED = 16


@dataclass(frozen=True, slots=True)
class Absorbed:
    """A traced call deferred into a window: when it was scheduled and deferred, and why."""

    id: str
    traceparent: str
    scheduled_ms: int
    deferred_ms: int
    reason: str
    successor: str


@dataclass(frozen=True, slots=True)
class WindowTrace:
    """A traced window: when its pending call was scheduled, and the traced calls it absorbed."""

    scheduled_ms: int
    absorbed: tuple[Absorbed, ...] = ()
