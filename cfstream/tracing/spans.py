"""What cfstream's spans share, on opentelemetry-api: the tracer, W3C ``traceparent`` in and
out (``TraceContextTextMapPropagator``), links, and the submit span."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from cfstream import tracing

logger = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., None])

PROPAGATOR = TraceContextTextMapPropagator()
TRACEPARENT = "traceparent"
NS_PER_MS = 1_000_000


def harmless(method: F) -> F:
    """Tracing never costs a call: an exception in ``method`` (which returns nothing) is
    logged, and the work goes on untraced."""

    @functools.wraps(method)
    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            method(*args, **kwargs)
        except Exception:
            logger.exception("tracing failed in %s; the work goes on untraced",
                             method.__qualname__)

    return guarded  # type: ignore[return-value]


def tracer(provider: TracerProvider | None = None) -> trace.Tracer:
    """cfstream's tracer, from ``provider`` (default: the global one, as set up)."""
    return trace.get_tracer(tracing.TRACER_NAME, tracer_provider=provider)


def parent(traceparent: str | None) -> Context:
    """The context to start a span in: the remote parent ``traceparent`` names, or none (a
    root span; never the thread's current context, which belongs to other work)."""
    if traceparent is None:
        return Context()
    return PROPAGATOR.extract({TRACEPARENT: traceparent}, context=Context())


def link(traceparent: str, attributes: dict[str, Any] | None = None) -> Link | None:
    """A link to the span ``traceparent`` names (None if it names none)."""
    context = trace.get_current_span(parent(traceparent)).get_span_context()
    return Link(context, attributes) if context.is_valid else None


def traceparent_of(span: Span) -> str | None:
    """``span``'s context as a W3C traceparent (None for a span without a valid one)."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span, Context()))
    return carrier.get(TRACEPARENT)


def ns(ms: int) -> int:
    return ms * NS_PER_MS


def fail(span: Span, error: BaseException | None, description: str) -> None:
    """Mark ``span`` failed, with the exception as an event when there is one."""
    if error is not None:
        span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, description))


class Submit:
    """``submit <task>``: a call's publication, a child of the current span. ``traceparent``
    is what the call record carries."""

    def __init__(self, task: str, call_id: str, defer_key: str | None, topic: str) -> None:
        attributes: dict[str, Any] = {tracing.TASK: task, tracing.EXECUTION_ID: call_id,
                                      tracing.MESSAGING_SYSTEM: "kafka",
                                      tracing.DESTINATION: topic}
        if defer_key is not None:
            attributes[tracing.DEFER_KEY] = defer_key
        self.span = tracer().start_span(f"submit {task}", kind=SpanKind.PRODUCER,
                                        attributes=attributes)
        self.traceparent = traceparent_of(self.span)

    def __enter__(self) -> Submit:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 _tb: TracebackType | None) -> None:
        if error is not None:
            fail(self.span, error, f"{type(error).__name__}: {error}")
        self.span.end()
