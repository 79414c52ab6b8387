"""Traces on the real pipeline (cfstream[otel]): a submitter, a processor and a worker as real
processes, each exporting its spans over OTLP/HTTP (the SDK's own exporter, as the README sets it
up) to a receiver in the test. The spans' parents and times must be the ones the events say."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Event, Pipeline, PipelineFactory
from otlp_receiver import Receiver, Span

import cfstream as cf
from cfstream.dev.services import pythonpath

pytestmark = pytest.mark.kafka

MS = 1_000_000
TIMEOUT = 60
LATEST = "pipeline_tasks:latest"  # returns its n; deferred by its key

# The submitting application: the SDK with an OTLP exporter, each scenario under a span of its
# own (the "request"), as a web service would be. Prints the ids of what it submitted.
SUBMITTER = """
import dataclasses, json, sys, time
import cfstream as cf
from cfstream.calls import new_call
from cfstream.client import current_client
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

provider = TracerProvider(resource=Resource.create({"service.name": "submitter"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("submitter")
tag = sys.argv[1]
ids = {}
with tracer.start_as_current_span("request"):
    ids["simple"] = cf.submit("pipeline_tasks:latest", [tag + "s", 1], delay=0.3,
                              defer_key=tag + "s").id
ids["chain"] = []
for n in range(3):  # one key, three requests: the last call runs, the others collapse into it
    with tracer.start_as_current_span("request"):
        ids["chain"].append(cf.submit("pipeline_tasks:latest", [tag + "c", n], delay=0.6,
                                      defer_key=tag + "c").id)
    time.sleep(0.1)
ids["outside"] = cf.submit("pipeline_tasks:latest", [tag + "o", 1]).id  # in no span
# A foreign producer's malformed traceparent: ignored, the call runs untraced.
bad = dataclasses.replace(new_call("pipeline_tasks:latest", {"key": tag + "b", "n": 7}, {},
                                   delay_ms=0, defer_key=None, max_wait_ms=None),
                          traceparent="00-not-a-trace-context")
with tracer.start_as_current_span("request"):
    current_client().publish(bad)
    ids["bad"] = bad.id
with tracer.start_as_current_span("request"):  # through the task object's own encoding
    import pipeline_tasks
    ids["task"] = pipeline_tasks.latest.submit(tag + "t", 5).id
with tracer.start_as_current_span("request"):
    ids["retried"] = cf.submit("pipeline_tasks:flaky", [tag, 1]).id
current_client().flush()
provider.shutdown()
print(json.dumps(ids))
"""


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


@pytest.fixture(scope="module")
def pipeline(pipeline_factory: PipelineFactory, receiver: Receiver) -> Pipeline:
    """One processor and one worker that trace, exporting to ``receiver``."""
    made = pipeline_factory(start=False)
    otel = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "50"}
    made.services.processor("processor-0", **otel)
    made.services.worker("worker-0", **otel)
    made.wait_ready()
    return made


@pytest.fixture(scope="module")
def submitted(pipeline: Pipeline, receiver: Receiver) -> dict[str, Any]:
    """What the submitter submitted, once every execution of it ended."""
    env = {**pipeline.services.env(), "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
           "PYTHONPATH": pythonpath(Path(__file__).parent)}  # pipeline_tasks too
    out = subprocess.run([sys.executable, "-c", SUBMITTER, uuid.uuid4().hex[:8]],
                         capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]
    ids: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    for execution_id in (ids["simple"], ids["chain"][-1], ids["retried"], ids["outside"],
                         ids["bad"], ids["task"]):
        pipeline.events.wait_for(lambda e, i=execution_id: e.get("id") == i
                                 and e["type"] == "succeeded", timeout=TIMEOUT)
    return ids


def event(pipeline: Pipeline, execution_id: str, type_: str, attempt: int = 1) -> Event:
    return pipeline.events.wait_for(lambda e: e.get("id") == execution_id and e["type"] == type_
                                    and e.get("attempt", 1) == attempt, timeout=TIMEOUT)[0]


def span_of(receiver: Receiver, execution_id: str, name: str, attempt: int = 1) -> Span:
    (span,) = receiver.wait_for(
        lambda s: s.name.startswith(name) and s.attributes.get("cfstream.execution.id")
        == execution_id and s.attributes.get("cfstream.attempt", 1) == attempt, timeout=TIMEOUT)
    return span


def life(receiver: Receiver, execution_id: str) -> tuple[Span, Span, Span, Span]:
    """The spans of a call's life: the request it was submitted in, submit, pending, run."""
    submit, pending, run = (span_of(receiver, execution_id, name)
                            for name in ("submit ", "pending ", "run "))
    (request,) = receiver.wait_for(lambda s: s.span_id == submit.parent_id)
    return request, submit, pending, run


def test_spans_nest_submit_pending_run_at_the_times_the_events_say(
        pipeline: Pipeline, receiver: Receiver, submitted: dict[str, Any]) -> None:
    execution_id = submitted["simple"]
    scheduled = event(pipeline, execution_id, "scheduled")
    started = event(pipeline, execution_id, "started")
    succeeded = event(pipeline, execution_id, "succeeded")
    request, submit, pending, run = life(receiver, execution_id)
    assert (request.service, submit.service, pending.service, run.service) == (
        "submitter", "submitter", "cfstream-processor", "cfstream-worker")
    # One trace, each span the child of the one before.
    assert {request.trace_id, submit.trace_id, pending.trace_id, run.trace_id} == \
        {request.trace_id}
    assert (pending.parent_id, run.parent_id) == (submit.span_id, pending.span_id)
    assert (submit.name, pending.name, run.name) == (
        f"submit {LATEST}", f"pending {LATEST}", f"run {LATEST}")
    # The times are the events' (ms), in the order of the call's life.
    assert (pending.start_ns, pending.end_ns) == (scheduled["ts_ms"] * MS, started["fired_ms"] * MS)
    assert (run.start_ns, run.end_ns) == (started["ts_ms"] * MS, succeeded["ts_ms"] * MS)
    assert scheduled["submitted_ms"] <= submit.start_ms <= submit.end_ms <= pending.start_ms
    assert pending.attributes["cfstream.due_ms"] == scheduled["due_ms"] == started["due_ms"]
    assert run.attributes["cfstream.worker"] == started["worker"]
    assert run.attributes["cfstream.outcome"] == "succeeded" and run.status != 2


def test_a_task_objects_submit_is_traced_like_submit_by_name(
        pipeline: Pipeline, receiver: Receiver, submitted: dict[str, Any]) -> None:
    execution_id = submitted["task"]
    request, submit, pending, run = life(receiver, execution_id)
    assert request.service == "submitter" and submit.name == f"submit {LATEST}"
    assert (pending.parent_id, run.parent_id) == (submit.span_id, pending.span_id)
    assert {submit.trace_id, pending.trace_id, run.trace_id} == {request.trace_id}
    assert event(pipeline, execution_id, "scheduled")["submitted_ms"] <= submit.start_ms


def test_a_collapsed_call_s_trace_shows_the_execution_that_ran_it(
        pipeline: Pipeline, receiver: Receiver, submitted: dict[str, Any]) -> None:
    first, second, last = submitted["chain"]
    ran = span_of(receiver, last, "pending ")
    run = span_of(receiver, last, "run ")
    assert run.parent_id == ran.span_id
    submits = {i: span_of(receiver, i, "submit ") for i in (first, second, last)}
    assert len({s.trace_id for s in submits.values()}) == 3  # three requests, three traces
    # The window that ran links to the calls it absorbed...
    assert [(t, s, a["cfstream.execution.id"]) for t, s, a in ran.links] == [
        (submits[i].trace_id, submits[i].span_id, i) for i in (first, second)]
    for execution_id, successor in ((first, second), (second, last)):
        deferred = event(pipeline, execution_id, "deferred")
        span = span_of(receiver, execution_id, "pending ")
        # ... and each absorbed call's own trace says which execution ran it, and links to it.
        assert (span.trace_id, span.parent_id) == (submits[execution_id].trace_id,
                                                   submits[execution_id].span_id)
        assert span.attributes["cfstream.ran_in"] == last
        assert span.attributes["cfstream.deferred.successor"] == successor == deferred["successor"]
        assert [(t, s) for t, s, _ in span.links] == [(ran.trace_id, ran.span_id)]
        assert span.end_ns == deferred["ts_ms"] * MS
        assert [(name, ts) for name, ts, _ in span.events] == [("deferred", span.end_ns)]
        assert span.start_ns == event(pipeline, execution_id, "scheduled")["ts_ms"] * MS
    # A deferral while the last call was pending (the second's, as it was scheduled; the first's
    # too if the processor read all three at once) is an event on the span that ran.
    deferrals = [(i, event(pipeline, i, "deferred")["ts_ms"] * MS) for i in (first, second)]
    assert [(a["cfstream.execution.id"], ts) for name, ts, a in ran.events] == [
        (i, ts) for i, ts in deferrals if ts >= ran.start_ns]
    assert deferrals[1][1] == ran.start_ns


def test_a_retry_is_a_child_of_the_attempt_that_failed(
        pipeline: Pipeline, receiver: Receiver, submitted: dict[str, Any]) -> None:
    execution_id = submitted["retried"]
    retrying = event(pipeline, execution_id, "retrying")
    run1, run2 = (span_of(receiver, execution_id, "run ", attempt) for attempt in (1, 2))
    pending2 = span_of(receiver, execution_id, "pending ", 2)
    assert (pending2.parent_id, run2.parent_id) == (run1.span_id, pending2.span_id)
    assert len({run1.trace_id, pending2.trace_id, run2.trace_id}) == 1
    assert run1.status == 2 and run1.attributes["cfstream.outcome"] == "retrying"
    assert run1.end_ns == retrying["ts_ms"] * MS
    assert [name for name, _, _ in run1.events] == ["exception", "retrying"]
    assert pending2.start_ns == event(pipeline, execution_id, "scheduled", 2)["ts_ms"] * MS
    assert pending2.attributes["cfstream.due_ms"] == retrying["retry_at_ms"]
    assert run2.attributes["cfstream.outcome"] == "succeeded"


def test_calls_outside_a_trace_or_with_a_bad_traceparent_run_untraced(
        pipeline: Pipeline, receiver: Receiver, submitted: dict[str, Any]) -> None:
    untraced = (submitted["outside"], submitted["bad"])
    assert pipeline.result(cf.Execution(submitted["bad"], client=pipeline.client)) == 7
    # Both ended before the retry's second attempt, whose spans the services exported after
    # any of theirs (each exports in the order its spans end).
    last = event(pipeline, submitted["retried"], "succeeded", 2)["ts_ms"]
    assert all(event(pipeline, i, "succeeded")["ts_ms"] < last for i in untraced)
    # Both also fired before that attempt, so had they a pending span, it would have ended
    # before the processor's span of that attempt, and the worker's: those arrived.
    fired = event(pipeline, submitted["retried"], "started", 2)["fired_ms"]
    assert all(event(pipeline, i, "started")["fired_ms"] < fired for i in untraced)
    span_of(receiver, submitted["retried"], "pending ", 2)
    span_of(receiver, submitted["retried"], "run ", 2)
    assert [s for s in receiver.spans if s.attributes.get("cfstream.execution.id") in untraced] \
        == []
