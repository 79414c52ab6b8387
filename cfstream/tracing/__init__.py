"""OpenTelemetry traces of a call's life (the ``cfstream[otel]`` extra), made through
opentelemetry-api alone, as OpenTelemetry's instrumentations do.

- ``submit <task>`` (PRODUCER, the submitting process): the call's publication. Its context
  travels in the call record as a W3C ``traceparent``.
- ``pending <task>`` (CONSUMER, the processor): the call's time in the pending table, from its
  ``scheduled`` event to its fire, deferral or cancel (:mod:`cfstream.processor.tracing`).
- ``run <task>`` (CONSUMER, the worker): one attempt, from ``started`` to its outcome
  (:mod:`cfstream.worker.tracing`).

A submit is traced when it happens inside a span (the process's current trace context, e.g. a
web request's): the submitting side never imports OpenTelemetry itself, it uses it when the
process has, so a process without it pays nothing. The services make spans only when their
``OTEL_*`` variables ask for an exporter (:mod:`cfstream.tracing.setup`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cfstream.settings import Settings
    from cfstream.tracing.spans import Submit

# The instrumentation scope of every cfstream span.
TRACER_NAME = "cfstream"
# Span attributes.
TASK = "cfstream.task"
EXECUTION_ID = "cfstream.execution.id"
DEFER_KEY = "cfstream.defer_key"
ATTEMPT = "cfstream.attempt"
DUE_MS = "cfstream.due_ms"
FIRED_MS = "cfstream.fired_ms"
NEXT_ATTEMPT = "cfstream.next_attempt"
RETRY_AT_MS = "cfstream.retry_at_ms"
OUTCOME = "cfstream.outcome"  # fired, deferred or cancelled (pending); succeeded... (run)
SUCCESSOR = "cfstream.deferred.successor"
REASON = "cfstream.deferred.reason"
RAN_IN = "cfstream.ran_in"  # a deferred call: the execution that ran it
WORKER = "cfstream.worker"
MESSAGING_SYSTEM = "messaging.system"
DESTINATION = "messaging.destination.name"


def submitting(task: str, call_id: str, defer_key: str | None,
               settings: Settings) -> Submit | None:
    """The span of a submit made inside a trace (``with`` it around the publish), or None:
    OpenTelemetry not loaded by this process, or no trace current."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return None
    from cfstream.tracing.spans import Submit

    return Submit(task, call_id, defer_key, settings.calls_topic)
