"""The processor's spans (cfstream.processor.tracing) on a real RocksDB, with the SDK's
in-memory exporter: each traced call's stay in the pending table, the links of a window to the
calls it absorbed, and the context its execution carries."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_partition import T0, call, fired, turn

from cfstream.processor import state
from cfstream.processor.partition import PartitionTask
from cfstream.processor.tracing import WindowTracer
from cfstream.scheduling.traces import MAX_ABSORBED
from cfstream.wire import Call, Collect, Control, Modes

MS = 1_000_000


def traceparent(n: int, sampled: bool = True) -> str:
    return f"00-{n:032x}-{n:016x}-{'01' if sampled else '00'}"


def ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced(partition_task: Callable[..., PartitionTask],
           exporter: InMemorySpanExporter) -> Iterator[PartitionTask]:
    """A partition task whose replica traces, into ``exporter`` (not the global provider)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    task = partition_task()
    task.windows = WindowTracer(provider.get_tracer("test"), task.settings.calls_topic)
    yield task
    provider.shutdown()


def traced_call(submitted: int, n: int, **changes: Any) -> Call:
    return dataclasses.replace(call(submitted, **changes), traceparent=traceparent(n))


def executions(task: PartitionTask) -> list[dict[str, Any]]:
    return task.outputs.values(task.settings.executions_topic)  # type: ignore[attr-defined]


def by_execution(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    spans = exporter.get_finished_spans()
    found = {str((s.attributes or {})["cfstream.execution.id"]): s for s in spans}
    assert len(found) == len(spans)
    return found


def test_a_fired_call_has_one_pending_span_and_its_execution_carries_it(
        traced: PartitionTask, exporter: InMemorySpanExporter) -> None:
    c = traced_call(T0, 1)
    turn(traced, [c], now=T0 + 5)
    turn(traced, [], now=T0 + 1_020, horizon=T0 + 1_015)
    (span,) = exporter.get_finished_spans()
    assert span.name == "pending tests:notify"
    assert span.parent is not None and (span.parent.trace_id, span.parent.span_id) == (1, 1)
    assert (span.start_time, span.end_time) == ((T0 + 5) * MS, (T0 + 1_020) * MS)
    assert (span.attributes or {})["cfstream.outcome"] == "fired"
    trace_id, span_id = ids(span)
    (execution,) = executions(traced)
    assert execution["traceparent"] == f"00-{trace_id:032x}-{span_id:016x}-01"
    # The marker keeps what was sent, to send it again on a replay; the window's trace is gone.
    marker = state.decode_slot(traced.db.get(state.slot_key(b"tests:notify|k")))
    assert marker is not None and marker.trace is None and marker.execution is not None
    assert marker.execution.call.traceparent == execution["traceparent"]


def test_a_window_links_the_calls_it_absorbed_and_their_spans_link_back(
        traced: PartitionTask, exporter: InMemorySpanExporter) -> None:
    a, b, c = traced_call(T0, 1), traced_call(T0 + 100, 2), traced_call(T0 + 200, 3)
    turn(traced, [a], now=T0 + 10)
    turn(traced, [b], now=T0 + 110)
    turn(traced, [c], now=T0 + 210)
    assert exporter.get_finished_spans() == ()  # made when the window ends
    turn(traced, [], now=T0 + 1_300, horizon=T0 + 1_250)
    assert fired(traced) == [c.id]
    spans = by_execution(exporter)
    ran = spans[c.id]
    assert (ran.start_time, ran.end_time) == ((T0 + 210) * MS, (T0 + 1_300) * MS)
    assert [(link.context.trace_id, (link.attributes or {})["cfstream.execution.id"])
            for link in ran.links] == [(1, a.id), (2, b.id)]
    # b was deferred as c was scheduled: an event on c's span; a's deferral is before it.
    assert [(e.name, e.timestamp, (e.attributes or {})["cfstream.execution.id"])
            for e in ran.events] == [("deferred", (T0 + 210) * MS, b.id)]
    for absorbed, n, start, end, successor in [(a, 1, 10, 110, b), (b, 2, 110, 210, c)]:
        span = spans[absorbed.id]
        assert span.parent is not None and span.parent.trace_id == n
        assert (span.start_time, span.end_time) == ((T0 + start) * MS, (T0 + end) * MS)
        attributes = span.attributes or {}
        assert attributes["cfstream.outcome"] == "deferred"
        assert attributes["cfstream.deferred.successor"] == successor.id
        assert attributes["cfstream.ran_in"] == c.id  # the execution that ran it
        assert [link.context.span_id for link in span.links] == [ids(ran)[1]]


def test_keep_first_defers_newer_calls_into_the_pending_one(
        traced: PartitionTask, exporter: InMemorySpanExporter) -> None:
    first = traced_call(T0, 1, delay=1_000)
    first = dataclasses.replace(first, modes=Modes(keep="first"))
    later = dataclasses.replace(traced_call(T0 + 300, 2), modes=Modes(keep="first"))
    turn(traced, [first], now=T0 + 10)
    turn(traced, [later], now=T0 + 310)
    turn(traced, [], now=T0 + 1_400, horizon=T0 + 1_350)
    spans = by_execution(exporter)
    ran = spans[first.id]
    assert [e.timestamp for e in ran.events] == [(T0 + 310) * MS]  # while it was pending
    assert [link.context.trace_id for link in ran.links] == [2]
    assert (spans[later.id].attributes or {})["cfstream.deferred.reason"] == "kept_first"


def test_a_cancelled_call_ends_its_span_at_the_cancel(
        traced: PartitionTask, exporter: InMemorySpanExporter) -> None:
    c = traced_call(T0, 1)
    turn(traced, [c], now=T0 + 10)
    turn(traced, [(c.key.encode(), Control("cancel", c.id).to_dict())], now=T0 + 500)
    (span,) = exporter.get_finished_spans()
    assert (span.attributes or {})["cfstream.outcome"] == "cancelled"
    assert span.end_time == (T0 + 500) * MS


def test_an_untraced_call_costs_no_span_and_no_state(
        traced: PartitionTask, exporter: InMemorySpanExporter) -> None:
    c = call(T0)
    turn(traced, [c], now=T0 + 10)
    raw = traced.db.get(state.slot_key(b"tests:notify|k"))
    assert b"trace" not in raw
    turn(traced, [], now=T0 + 1_020, horizon=T0 + 1_015)
    assert exporter.get_finished_spans() == ()
    assert "traceparent" not in executions(traced)[0]


def test_an_untraced_window_that_absorbed_traced_calls_runs_in_a_trace_of_its_own(
        traced: PartitionTask, exporter: InMemorySpanExporter) -> None:
    a, b = traced_call(T0, 1), call(T0 + 100)
    turn(traced, [a], now=T0 + 10)
    turn(traced, [b], now=T0 + 110)
    turn(traced, [], now=T0 + 1_200, horizon=T0 + 1_150)
    spans = by_execution(exporter)
    assert spans[b.id].parent is None and [link.context.trace_id for link in spans[b.id].links] \
        == [1]
    assert (spans[a.id].attributes or {})["cfstream.ran_in"] == b.id
    assert executions(traced)[0]["traceparent"].split("-")[2] == f"{ids(spans[b.id])[1]:016x}"


def test_a_window_keeps_a_bounded_number_of_absorbed_calls(
        traced: PartitionTask, exporter: InMemorySpanExporter) -> None:
    calls = [traced_call(T0 + i, i + 1) for i in range(MAX_ABSORBED + 5)]
    for i, c in enumerate(calls):
        turn(traced, [c], now=T0 + i + 1)
    slot = state.decode_slot(traced.db.get(state.slot_key(b"tests:notify|k")))
    assert slot is not None and slot.trace is not None
    assert len(slot.trace.absorbed) == MAX_ABSORBED
    # The calls past the bound got their span at their deferral, naming their successor.
    assert len(exporter.get_finished_spans()) == len(calls) - 1 - MAX_ABSORBED
    turn(traced, [], now=T0 + 2_000, horizon=T0 + 2_000)
    assert len(by_execution(exporter)) == len(calls)
    assert len(by_execution(exporter)[calls[-1].id].links) == MAX_ABSORBED


def test_a_call_deferred_to_one_that_ran_links_to_its_execution(
        traced: PartitionTask, exporter: InMemorySpanExporter) -> None:
    newer, older = traced_call(T0 + 100, 1), traced_call(T0, 2)
    turn(traced, [newer], now=T0 + 110)
    turn(traced, [], now=T0 + 1_200, horizon=T0 + 1_150)
    turn(traced, [older], now=T0 + 1_300)  # out of order: the key ran a newer call already
    spans = by_execution(exporter)
    assert (spans[older.id].attributes or {})["cfstream.ran_in"] == newer.id
    assert [link.context.span_id for link in spans[older.id].links] == [ids(spans[newer.id])[1]]


def test_an_untraced_collect_window_that_fires_early_for_a_traced_call_stays_untraced(
        traced: PartitionTask, exporter: InMemorySpanExporter) -> None:
    collect = Modes(collect=Collect(max_calls=1_000, max_bytes=20))
    first = dataclasses.replace(call(T0, args=["x" * 15]), modes=collect)
    turn(traced, [first], now=T0 + 10)
    second = dataclasses.replace(traced_call(T0 + 100, 2, args=["y" * 15]), modes=collect)
    turn(traced, [second], now=T0 + 110)  # over max_bytes: the first window fires at once
    assert fired(traced) == [first.id] and "traceparent" not in executions(traced)[0]
    assert exporter.get_finished_spans() == ()
    turn(traced, [], now=T0 + 1_200, horizon=T0 + 1_150)
    assert list(by_execution(exporter)) == [second.id]


def test_a_replayed_call_is_absorbed_once(traced: PartitionTask,
                                          exporter: InMemorySpanExporter) -> None:
    """After a failover the new owner reads calls again: b, already replaced by c, comes back
    (late, out of order) and must not be linked or spanned a second time."""
    b, c = traced_call(T0 + 100, 2), traced_call(T0 + 200, 3)
    turn(traced, [b], now=T0 + 110)
    turn(traced, [c], now=T0 + 210)
    turn(traced, [b], now=T0 + 220)  # the replay
    turn(traced, [], now=T0 + 1_300, horizon=T0 + 1_250)
    assert fired(traced) == [c.id]
    spans = by_execution(exporter)  # one span an execution id
    assert sorted(spans) == sorted([b.id, c.id])
    assert [(link.attributes or {})["cfstream.execution.id"] for link in spans[c.id].links] \
        == [b.id]


def test_a_failure_in_tracing_leaves_the_call_untraced_not_lost(
        traced: PartitionTask, exporter: InMemorySpanExporter) -> None:
    def broken(*_: Any) -> Any:
        raise RuntimeError("a bug in tracing")

    traced.windows._follow = broken  # type: ignore[union-attr, method-assign]
    c = traced_call(T0, 1)
    turn(traced, [c], now=T0 + 5)
    turn(traced, [], now=T0 + 1_020, horizon=T0 + 1_015)
    assert fired(traced) == [c.id]
    assert exporter.get_finished_spans() == ()
