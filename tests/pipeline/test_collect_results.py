"""Collecting results after the work is done (issue #17), through the real processor and
worker: a batch of 2,200 calls (plain, deferred on 125 keys, failing) runs to the end, then its
results are collected the ways people do it, each pass bounded in total time. The old reader
took about a second a result for this pattern."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from harness import Pipeline
from pipeline_tasks import after_seconds, explode, notify

import cfstream as cf

pytestmark = pytest.mark.kafka

PLAIN, KEYS, CALLS_PER_KEY, FAILING = 1_000, 125, 8, 100
# bench/after.py collects 10,000 finished results in 0.2-0.4 s on this 2-core machine; 2,200
# here within 5 s leaves room for a loaded CI machine, processor and worker still running.
PASS_S = 5.0
RUN_TIMEOUT = 180


@dataclass
class Batch:
    executions: list[cf.Execution]
    expected: dict[str, Any]  # id -> the result, or the error type raised

    def outcome(self, execution: cf.Execution, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except cf.ExecutionFailed as error:
            return error.error_type

    def check(self, outcomes: dict[str, Any]) -> None:
        wrong = {i: (outcomes.get(i), want) for i, want in self.expected.items()
                 if outcomes.get(i) != want}
        assert not wrong, f"{len(wrong)} wrong, e.g. {list(wrong.items())[:3]}"


@pytest.fixture(scope="module")
def batch(pipeline: Pipeline) -> Batch:
    """The batch, submitted at once and run to its end before any result is asked for."""
    run = uuid.uuid4().hex[:6]
    executions, expected = [], {}
    pipeline.submit(after_seconds, f"{run}-warm-up")  # the producer's id is had before the burst
    assert pipeline.client.flush(30) == 0
    for _ in range(CALLS_PER_KEY):  # each key's calls within its quiet period
        for k in range(KEYS):
            execution = pipeline.submit(notify, f"{run}-u{k}", k)
            executions.append(execution)
            expected[execution.id] = f"{run}-u{k}:{k}"
    for i in range(PLAIN):
        execution = pipeline.submit(after_seconds, f"{run}-p{i}")
        executions.append(execution)
        expected[execution.id] = f"{run}-p{i}"
    for i in range(FAILING):
        execution = pipeline.submit(explode, f"{run}-x{i}", 0)
        executions.append(execution)
        expected[execution.id] = "ValueError"
    assert pipeline.client.flush(30) == 0
    ends = KEYS + PLAIN + FAILING
    pipeline.events.wait_for(
        lambda e: e["type"] in ("succeeded", "failed") and run in str(e.get("result", "x"))
        or (e["type"] == "failed" and run in json.dumps(e.get("error"))),
        count=ends, timeout=RUN_TIMEOUT)
    return Batch(executions, expected)


def collect(batch: Batch, executions: list[cf.Execution]) -> tuple[float, dict[str, Any]]:
    began = time.monotonic()
    outcomes = {e.id: batch.outcome(e, lambda e=e: e.result(timeout=30)) for e in executions}
    return time.monotonic() - began, outcomes


def test_in_submit_order_from_the_submitting_process(batch: Batch) -> None:
    took, outcomes = collect(batch, batch.executions)
    batch.check(outcomes)
    assert took < PASS_S


@pytest.mark.parametrize("order", ["reversed", "shuffled"])
def test_in_other_orders_from_a_new_client(pipeline: Pipeline, batch: Batch,
                                           order: str) -> None:
    client = cf.Client(pipeline.settings)
    try:
        ids = [e.id for e in batch.executions]
        ids = ids[::-1] if order == "reversed" else random.Random(5).sample(ids, len(ids))
        took, outcomes = collect(batch, [cf.Execution(i, client=client) for i in ids])
    finally:
        client.close()
    batch.check(outcomes)
    assert took < PASS_S


def test_status_of_every_call(pipeline: Pipeline, batch: Batch) -> None:
    client = cf.Client(pipeline.settings)
    try:
        began = time.monotonic()
        states = [cf.Execution(e.id, client=client).status() for e in batch.executions]
        took = time.monotonic() - began
    finally:
        client.close()
    assert "unknown" not in states
    # Each key's calls are submitted within its quiet period, so all but the last are merged;
    # but a call that reaches Kafka a quiet period late (a submitter stalled on a loaded
    # machine: CI saw 866 of 875) rightly runs on its own. status() must say what the
    # pipeline did, and nearly all must have merged.
    merged = {e["id"] for e in list(pipeline.events.events) if e["type"] == "deferred"}
    ours = {e.id for e in batch.executions}
    assert states.count("deferred") == len(merged & ours)
    assert len(merged & ours) >= 0.95 * KEYS * (CALLS_PER_KEY - 1)
    assert states.count("failed") == FAILING
    assert took < PASS_S


def test_from_a_fresh_process(pipeline: Pipeline, batch: Batch) -> None:
    script = (
        "import json, sys, time\n"
        "import cfstream as cf\n"
        "ids = json.loads(sys.stdin.read())\n"
        "began = time.monotonic()\n"
        "out = {}\n"
        "for i in ids:\n"
        "    try:\n"
        "        out[i] = cf.Execution(i).result(timeout=30)\n"
        "    except cf.ExecutionFailed as e:\n"
        "        out[i] = e.error_type\n"
        "print(json.dumps([time.monotonic() - began, out]))\n")
    done = subprocess.run([sys.executable, "-c", script],
                          input=json.dumps([e.id for e in batch.executions]),
                          capture_output=True, text=True, timeout=120, check=False,
                          env=pipeline.services.env())
    assert done.returncode == 0, done.stderr[-2000:]
    took, outcomes = json.loads(done.stdout)
    batch.check(outcomes)
    assert took < PASS_S


def test_awaited_all_at_once_and_through_cf_wait(pipeline: Pipeline, batch: Batch) -> None:
    client = cf.Client(pipeline.settings)
    try:
        executions = [cf.Execution(e.id, client=client) for e in batch.executions]

        async def gather() -> list[Any]:
            return await asyncio.gather(*executions, return_exceptions=True)

        began = time.monotonic()
        results = asyncio.run(gather())
        took = time.monotonic() - began
        outcomes = {e.id: (r.error_type if isinstance(r, cf.ExecutionFailed) else r)
                    for e, r in zip(executions, results, strict=True)}
        batch.check(outcomes)
        assert took < PASS_S
        fresh = [cf.Execution(e.id, client=client) for e in batch.executions]
        done, not_done = cf.wait(fresh, timeout=30)
        assert done == set(fresh) and not not_done
    finally:
        client.close()
