"""The processor's spans, when its tracing is on: each traced call's stay in the pending table.

``pending <task>`` (CONSUMER), a child of the span the call's ``traceparent`` names, from the
call's ``scheduled`` event to when it left the table:

- fired: the span ends at ``fired_ms``, and the execution carries its context, so the worker's
  run is its child. It links to the traced calls its window absorbed, and has a ``deferred``
  event for each one deferred while it was pending.
- deferred (replaced, collected, kept_first, out_of_order): the span ends with a ``deferred``
  event at the deferral. It is made when the window ends, so that it can link to the span of
  the call that ran it (``cfstream.ran_in`` names that execution): a collapsed call's trace
  shows which execution ran it. Past :data:`~cfstream.scheduling.traces.MAX_ABSORBED` traced
  calls in one window, and for a call deferred to a call that fired already, the span is made
  at the deferral, naming the successor.
- cancelled: the span ends at the cancel.

A window with no traced call costs one check a record. :meth:`WindowTracer.follow` carries the
window's trace (``Slot.trace``) along each decision the rules take.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from opentelemetry.trace import Link, SpanKind, Tracer

from cfstream import tracing
from cfstream.scheduling.rules import Decision, Slot
from cfstream.scheduling.traces import MAX_ABSORBED, Absorbed, WindowTrace
from cfstream.tracing.spans import link, ns, parent, traceparent_of
from cfstream.wire import Call, FiredCall

logger = logging.getLogger(__name__)


class WindowTracer:
    def __init__(self, tracer: Tracer, calls_topic: str) -> None:
        self.tracer = tracer
        self.calls_topic = calls_topic

    def follow(self, before: Slot | None, call: Call | None, decision: Decision) -> Decision:
        """``decision`` (taken on ``before``, for ``call`` if a call came) with the window's
        trace carried into its slot, after making the spans of the calls that left the table;
        fired executions carry their span's context. Tracing never costs a call: if it fails,
        the decision goes on untraced."""
        try:
            return self._follow(before, call, decision)
        except Exception:
            logger.exception("tracing a decision failed; it goes on untraced")
            return decision

    def _follow(self, before: Slot | None, call: Call | None, decision: Decision) -> Decision:
        pending = before.call if before is not None else None
        window = before.trace if before is not None else None
        if window is None and (call is None or call.traceparent is None) and (
                pending is None or pending.traceparent is None):
            return decision  # nothing traced here
        slot, executions = decision.slot, decision.executions
        traced = window is not None or (pending is not None and pending.traceparent is not None)
        if decision.changed and pending is not None and any(
                fired.call.id == pending.id for fired in executions):  # the window fired
            if traced:
                executions = [self._fired(pending, window, fired) if fired.call.id == pending.id
                              else fired for fired in executions]
                if slot is not None and slot.execution is not None \
                        and slot.execution.call.id == pending.id:
                    slot = replace(slot, execution=executions[-1])
            pending, window = None, None  # a call may open the next window
        absorbed = list(window.absorbed) if window is not None else []
        scheduled = window.scheduled_ms if window is not None else None  # pending's
        current = slot.call if slot is not None else None  # the pending call after
        kept = scheduled if pending is not None and current is not None \
            and current.id == pending.id else None  # current's scheduled time
        for item in decision.events:
            kind, subject = item["type"], item["id"]
            if kind == "scheduled" and current is not None and subject == current.id:
                kept = item["ts_ms"]
            elif kind == "cancelled" and traced and pending is not None and subject == pending.id:
                self._ended(pending, scheduled, absorbed, item["ts_ms"], "cancelled")
                absorbed = []
            elif kind == "deferred":
                self._deferred(item, pending, call, scheduled, slot, absorbed)
        trace = None
        if current is not None and (current.traceparent or absorbed):
            # Traced only since it was pending (tracing turned on): its submit time instead.
            trace = WindowTrace(current.submitted_ms if kept is None else kept, tuple(absorbed))
        if slot is not None and slot.trace != trace:
            slot = replace(slot, trace=trace)
        if slot is decision.slot and executions is decision.executions:
            return decision
        return Decision(slot, changed=True, executions=executions, events=decision.events)

    def _deferred(self, item: dict[str, Any], pending: Call | None, call: Call | None,
                  scheduled_ms: int | None, slot: Slot | None, absorbed: list[Absorbed]) -> None:
        """A call deferred: kept for the window it went into, or its span made now."""
        subject, now = item["id"], item["ts_ms"]
        if call is not None and call.id == subject:
            deferred, scheduled = call, now
        elif pending is not None and pending.id == subject:
            deferred = pending
            scheduled = scheduled_ms if scheduled_ms is not None else pending.submitted_ms
        else:
            return
        if deferred.traceparent is None or any(a.id == subject for a in absorbed):
            return  # untraced, or a replay of a deferral the window keeps already
        entry = Absorbed(subject, deferred.traceparent, scheduled, now, item["reason"],
                         item["successor"])
        current = slot.call if slot is not None else None
        if current is not None and current.id == entry.successor:
            if len(absorbed) < MAX_ABSORBED:
                absorbed.append(entry)
            else:
                self._absorbed_span(deferred.task, entry, None, current.traceparent)
            return
        ran = slot.execution if slot is not None else None
        if ran is not None and ran.call.id == entry.successor:  # deferred to a call that ran
            self._absorbed_span(deferred.task, entry, ran.call, ran.call.traceparent)
        else:
            self._absorbed_span(deferred.task, entry, None, None)

    def _fired(self, pending: Call, window: WindowTrace | None, fired: FiredCall) -> FiredCall:
        """The spans of a window that fired; its execution carries its span's context."""
        scheduled = window.scheduled_ms if window is not None else pending.submitted_ms
        absorbed = list(window.absorbed) if window is not None else []
        span_context = self._ended(pending, scheduled, absorbed, fired.fired_ms, "fired",
                                   fired.due_ms)
        return replace(fired, call=replace(fired.call, traceparent=span_context))

    def _ended(self, pending: Call, scheduled_ms: int | None, absorbed: list[Absorbed],
               end_ms: int, outcome: str, due_ms: int | None = None) -> str | None:
        """The span of ``pending``, which left the table at ``end_ms``, and those of the calls
        its window absorbed (linking to it); its context as a traceparent."""
        start = scheduled_ms if scheduled_ms is not None else pending.submitted_ms
        attributes = self._attributes(pending, outcome)
        if due_ms is not None:
            attributes[tracing.DUE_MS] = due_ms
        links = [found for entry in absorbed if (found := link(
            entry.traceparent, {tracing.EXECUTION_ID: entry.id, tracing.REASON: entry.reason}))]
        span = self.tracer.start_span(f"pending {pending.task}", parent(pending.traceparent),
                                      SpanKind.CONSUMER, attributes, links, ns(start))
        for entry in absorbed:
            if entry.deferred_ms >= start:
                span.add_event("deferred", {tracing.EXECUTION_ID: entry.id,
                                            tracing.REASON: entry.reason,
                                            tracing.SUCCESSOR: entry.successor},
                               ns(entry.deferred_ms))
        span.end(ns(end_ms))
        context = traceparent_of(span)
        ran_in = pending if outcome == "fired" else None
        for entry in absorbed:
            self._absorbed_span(pending.task, entry, ran_in, context)
        return context

    def _absorbed_span(self, task: str, entry: Absorbed, ran_in: Call | None,
                       target: str | None) -> None:
        """The span of a deferred call, linked to the span ``target`` names: the pending span
        of the call that ran it (``ran_in``), or else of its successor."""
        attributes: dict[str, Any] = {
            tracing.TASK: task, tracing.EXECUTION_ID: entry.id, tracing.OUTCOME: "deferred",
            tracing.REASON: entry.reason, tracing.SUCCESSOR: entry.successor,
            tracing.MESSAGING_SYSTEM: "kafka", tracing.DESTINATION: self.calls_topic}
        if ran_in is not None:
            attributes[tracing.RAN_IN] = ran_in.id
        found = link(target) if target is not None else None
        links: list[Link] = [found] if found is not None else []
        span = self.tracer.start_span(f"pending {task}", parent(entry.traceparent),
                                      SpanKind.CONSUMER, attributes, links,
                                      ns(entry.scheduled_ms))
        span.add_event("deferred", {tracing.SUCCESSOR: entry.successor,
                                    tracing.REASON: entry.reason}, ns(entry.deferred_ms))
        span.end(ns(entry.deferred_ms))

    def _attributes(self, call: Call, outcome: str) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            tracing.TASK: call.task, tracing.EXECUTION_ID: call.id, tracing.ATTEMPT: call.attempt,
            tracing.OUTCOME: outcome, tracing.MESSAGING_SYSTEM: "kafka",
            tracing.DESTINATION: self.calls_topic}
        if call.defer_key is not None:
            attributes[tracing.DEFER_KEY] = call.defer_key
        return attributes
