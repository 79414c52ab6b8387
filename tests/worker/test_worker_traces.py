"""The worker's spans (cfstream.worker.tracing) on the loop's stand-ins, with the SDK's in-memory
exporter: a run per attempt at the events' times, current while the task runs, the parent of
its retry; a backlog merge links the merged execution to the one that took its place."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from worker_harness import NOW, fired

from cfstream.retries import Retries
from cfstream.task import Task
from cfstream.wire import traceparent as valid_traceparent
from cfstream.worker.jobs import Job
from cfstream.worker.tracing import RunSpans

MS = 1_000_000
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
GATE = threading.Event()


def current_span() -> str:
    return f"{trace.get_current_span().get_span_context().span_id:016x}"


RUN_TASKS: list[asyncio.Task[Any] | None] = []  # the asyncio tasks async_current_span ran in


async def async_current_span() -> str:
    await asyncio.sleep(0)
    RUN_TASKS.append(asyncio.current_task())
    return current_span()


def gated() -> None:
    assert GATE.wait(30)


def failing() -> None:
    raise ConnectionError("try again")


TASKS = [Task(fn=current_span, name="t:current"), Task(fn=gated, name="t:gated"),
         Task(fn=failing, name="t:failing", retries=Retries(limit=2, delay_min=5)),
         Task(fn=lambda n: n, name="t:echo"),
         Task(fn=async_current_span, name="t:async_current")]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    GATE.clear()
    yield InMemorySpanExporter()
    GATE.set()


@pytest.fixture
def traced(harness_of: Any, exporter: InMemorySpanExporter) -> Any:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return harness_of(TASKS, concurrency=1,
                      spans=RunSpans(provider.get_tracer("test"), "w:1", "cfstream.executions"))


def only(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    (span,) = [s for s in exporter.get_finished_spans() if s.name == name]
    return span


def test_a_run_is_a_child_of_the_execution_s_context_and_current_in_its_task(
        traced: Any, exporter: InMemorySpanExporter) -> None:
    traced.feed(fired("t:current", [], traceparent=TRACEPARENT))
    traced.run_until(traced.ended(1))
    (started,), (succeeded,) = traced.events("started"), traced.events("succeeded")
    span = only(exporter, "run t:current")
    assert span.parent is not None and f"{span.parent.span_id:016x}" == TRACEPARENT[36:52]
    assert span.context is not None and succeeded["result"] == f"{span.context.span_id:016x}"
    assert (span.start_time, span.end_time) == (started["ts_ms"] * MS, succeeded["ts_ms"] * MS)
    assert (span.attributes or {})["cfstream.worker"] == "w:1"


def test_an_async_run_s_span_is_current_in_it_and_not_in_the_next_run_of_its_slot(
        traced: Any) -> None:
    """A slot runs its async executions one after another in one asyncio task: the traced
    one's span is current while it runs, and gone when the untraced one after it runs."""
    RUN_TASKS.clear()
    spans, dispatcher = traced.worker.report.spans, traced.worker.dispatcher
    first = Job(fired("t:async_current", [], traceparent=TRACEPARENT), 0, 1)
    second = Job(fired("t:async_current", []), 0, 2)
    spans.started(first, NOW)
    dispatcher.submit(Job(fired("t:gated", []), 0, 0))  # holds the slot while the two queue
    dispatcher.submit(first)
    dispatcher.submit(second)
    GATE.set()
    got: dict[int, Any] = {}
    deadline = time.monotonic() + 10
    while len(got) < 3 and time.monotonic() < deadline:
        got.update((job.offset, outcome) for job, outcome in dispatcher.outcomes(wait=0.1))
    span_id = spans.spans[first.id].get_span_context().span_id
    assert got[1].fields["result"] == f"{span_id:016x}"
    assert got[2].fields["result"] == "0" * 16
    assert len(RUN_TASKS) == 2 and RUN_TASKS[0] is RUN_TASKS[1]


def test_an_untraced_execution_runs_without_a_span(traced: Any,
                                                   exporter: InMemorySpanExporter) -> None:
    traced.feed(fired("t:current", []))
    traced.run_until(traced.ended(1))
    assert traced.events("succeeded")[0]["result"] == "0" * 16  # no span was current
    assert exporter.get_finished_spans() == ()


def test_a_retry_carries_the_context_of_the_attempt_that_failed(
        traced: Any, exporter: InMemorySpanExporter) -> None:
    traced.feed(fired("t:failing", [], traceparent=TRACEPARENT))
    traced.run_until(traced.ended(1))
    (retrying,) = traced.events("retrying")
    span = only(exporter, "run t:failing")
    (retry,) = traced.producer.on(traced.settings.calls_topic)
    assert span.context is not None
    assert valid_traceparent(retry["traceparent"]) == retry["traceparent"]
    assert retry["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"
    assert span.end_time == retrying["ts_ms"] * MS and not span.status.is_ok
    assert [e.name for e in span.events] == ["exception", "retrying"]


def test_a_backlog_merge_links_the_merged_execution_to_its_successor(
        traced: Any, exporter: InMemorySpanExporter) -> None:
    traced.feed(fired("t:gated", []))  # keeps the one slot busy while the two queue up
    traced.run_until(lambda: len(traced.events("started")) == 1)
    other = "00-1af7651916cd43dd8448eb211c80319c-c7ad6b7169203331-01"
    older = fired("t:echo", [1], key="k", at=NOW + 1, traceparent=TRACEPARENT)
    newer = fired("t:echo", [2], key="k", at=NOW + 2, traceparent=other)
    traced.feed(older, newer)
    traced.run_until(lambda: len(traced.events("deferred")) == 1)
    GATE.set()
    traced.run_until(traced.ended(3))
    span = only(exporter, "deferred t:echo")
    (deferred,) = traced.events("deferred")
    assert (span.attributes or {})["cfstream.deferred.successor"] == newer.call.id
    assert [f"{link.context.span_id:016x}" for link in span.links] == [other[36:52]]
    assert span.start_time == span.end_time == deferred["ts_ms"] * MS
