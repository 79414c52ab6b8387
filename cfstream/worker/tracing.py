"""The worker's spans, when its tracing is on: one ``run <task>`` (CONSUMER) per attempt of a
traced execution, a child of the span its ``traceparent`` names (the processor's ``pending``
span, or the submitter's when the processor does not trace).

The span starts at the ``started`` event's time and ends at the outcome's (``succeeded``,
``failed`` or ``retrying``); it is the current span while the task runs, so the task's own spans
(an HTTP client's, say) are its children. A retry's call record carries its context: the next
attempt's ``pending`` span is its child. An execution merged away in this worker's backlog gets
a ``deferred <task>`` span that links to the execution that took its place.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Tracer

from cfstream import tracing
from cfstream.tracing.spans import fail, harmless, link, ns, parent, traceparent_of
from cfstream.wire import Call
from cfstream.worker.execute import Outcome
from cfstream.worker.jobs import Job


class RunSpans:
    def __init__(self, tracer: Tracer, worker: str, executions_topic: str) -> None:
        self.tracer = tracer
        self.worker = worker
        self.executions_topic = executions_topic
        # Execution id -> the span of its attempt here, from started to its outcome (written
        # on the worker's thread, read on the task's).
        self.spans: dict[str, Span] = {}

    @harmless
    def started(self, job: Job, ts_ms: int) -> None:
        """``job``'s ``started`` event says ``ts_ms``: its span begins (if it is traced)."""
        call = job.call
        if call.traceparent is None or job.id in self.spans:  # untraced, or announced again
            return
        attributes = self._attributes(call)
        attributes[tracing.DUE_MS] = job.execution.due_ms
        attributes[tracing.FIRED_MS] = job.execution.fired_ms
        self.spans[job.id] = self.tracer.start_span(
            f"run {call.task}", parent(call.traceparent), SpanKind.CONSUMER, attributes,
            start_time=ns(ts_ms))

    def current(self, job: Job) -> AbstractContextManager[Any]:
        """``job``'s span as the current one, around its task (on the task's thread)."""
        span = self.spans.get(job.id)
        if span is None:
            return nullcontext()
        # The task's exception is its outcome, reported by ended().
        return trace.use_span(span, record_exception=False, set_status_on_exception=False)

    def traceparent(self, job: Job) -> str | None:
        """What a retry of ``job`` carries: its span's context, or what the execution had."""
        span = self.spans.get(job.id)
        return job.call.traceparent if span is None else traceparent_of(span)

    @harmless
    def ended(self, job: Job, ts_ms: int, outcome: Outcome, retry: Call | None = None) -> None:
        """``job``'s outcome event says ``ts_ms`` (``retry``: the attempt that follows)."""
        span = self.spans.pop(job.id, None)
        if span is None:
            return
        kind = "retrying" if retry is not None else outcome.type
        span.set_attribute(tracing.OUTCOME, kind)
        if outcome.type == "failed":
            error = outcome.fields["error"]
            fail(span, outcome.error, f"{error['type']}: {error['message']}")
        if retry is not None:
            span.add_event("retrying", {tracing.NEXT_ATTEMPT: retry.attempt,
                                        tracing.RETRY_AT_MS: retry.not_before_ms or ts_ms},
                           ns(ts_ms))
        span.end(ns(ts_ms))

    @harmless
    def deferred(self, loser: Job, winner: Job, ts_ms: int) -> None:
        """``loser`` was merged into ``winner`` in the backlog, at ``ts_ms``."""
        call = loser.call
        if call.traceparent is None:
            return
        attributes = self._attributes(call)
        attributes.update({tracing.OUTCOME: "deferred", tracing.REASON: "backlog",
                           tracing.SUCCESSOR: winner.id})
        found = link(winner.call.traceparent) if winner.call.traceparent else None
        span = self.tracer.start_span(f"deferred {call.task}", parent(call.traceparent),
                                      SpanKind.CONSUMER, attributes,
                                      [found] if found is not None else None, ns(ts_ms))
        span.add_event("deferred", {tracing.SUCCESSOR: winner.id, tracing.REASON: "backlog"},
                       ns(ts_ms))
        span.end(ns(ts_ms))

    def _attributes(self, call: Call) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            tracing.TASK: call.task, tracing.EXECUTION_ID: call.id, tracing.ATTEMPT: call.attempt,
            tracing.WORKER: self.worker, tracing.MESSAGING_SYSTEM: "kafka",
            tracing.DESTINATION: self.executions_topic}
        if call.defer_key is not None:
            attributes[tracing.DEFER_KEY] = call.defer_key
        return attributes
