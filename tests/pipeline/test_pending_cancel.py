"""`cfstream pending` and `cfstream cancel` against running replicas."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid

import pytest
from harness import Pipeline
from pipeline_tasks import after_seconds, notify_update, settles, slow

import cfstream as cf

pytestmark = pytest.mark.kafka


def cli(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cfstream", *args], capture_output=True,
                          text=True, timeout=120, env=pipeline.services.env())


def pending(pipeline: Pipeline, *args: str) -> list[dict]:
    out = cli(pipeline, "pending", "--json", *args)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_pending_lists_waiting_calls_and_cancel_drops_them(pipeline: Pipeline) -> None:
    user = uuid.uuid4().hex[:8]
    later = pipeline.submit(after_seconds.with_delay(60), "later")
    debounced = pipeline.submit(notify_update.with_delay(60), user, 5, "edit")
    submitted = int(time.time() * 1000)
    for execution in (later, debounced):
        pipeline.events.one(execution.id, "scheduled")

    listed = {item["id"]: item for item in pending(pipeline)}
    assert set(listed) >= {later.id, debounced.id}
    assert abs(listed[later.id]["due_ms"] - (submitted + 60_000)) < 5_000
    only = pending(pipeline, "--task", notify_update.name, "--key", f"#{user}:#5")
    assert [item["id"] for item in only] == [debounced.id]

    out = cli(pipeline, "cancel", later.id, "--reason", "not needed")
    assert out.returncode == 0, out.stderr
    assert f"cancelled {later.id}" in out.stdout
    with pytest.raises(cf.ExecutionCancelled) as info:
        later.result(timeout=30)
    assert info.value.reason == "not needed"

    out = cli(pipeline, "cancel", "--task", notify_update.name, "--key", f"#{user}:#5")
    assert out.returncode == 0, out.stderr
    with pytest.raises(cf.ExecutionCancelled):
        debounced.result(timeout=30)
    remaining = {item["id"] for item in pending(pipeline)}
    assert not remaining & {later.id, debounced.id}

    out = cli(pipeline, "cancel", later.id)
    assert out.returncode == 1 and "nothing pending" in out.stderr


def test_execution_cancel_drops_the_pending_call_of_its_chain(pipeline: Pipeline) -> None:
    """As a user calls it: right after submit, on a call a newer one replaced, on one that
    ran, and from a coroutine."""
    # Right after submit: the processor may not have scheduled it yet.
    fresh = pipeline.submit(after_seconds.with_delay(60), "fresh")
    assert fresh.cancel("changed my mind") is True
    with pytest.raises(cf.ExecutionCancelled) as info:
        fresh.result(timeout=30)
    assert info.value.reason == "changed my mind" and info.value.execution_id == fresh.id

    # The first of three debounced calls: the third is the one pending, and goes.
    user = uuid.uuid4().hex[:8]
    chain = [pipeline.submit(notify_update.with_delay(60), user, 9, f"edit-{n}")
             for n in range(3)]
    pipeline.events.wait_for(lambda e: e["type"] == "deferred" and e["id"] == chain[1].id)
    assert chain[0].cancel() is True
    for execution in chain:
        with pytest.raises(cf.ExecutionCancelled) as info:
            execution.result(timeout=30)
        assert info.value.execution_id == chain[2].id
    assert chain[0].cancel() is True  # cancelled it stays
    assert not [e for e in pipeline.events.events
                if e.get("id") in {c.id for c in chain} and e["type"] == "started"]

    # One that failed and waits for its retry (5 s later): the retry goes.
    retried = pipeline.submit(settles, uuid.uuid4().hex[:8], "bad")
    pipeline.events.one(retried.id, "retrying")
    assert retried.cancel("no retry") is True
    with pytest.raises(cf.ExecutionCancelled):
        retried.result(timeout=30)
    assert len(pipeline.events.of(retried.id, "started")) == 1

    # One that started: too late, said at once (not at the timeout).
    running = pipeline.submit(slow, 3.0)
    pipeline.events.one(running.id, "started")
    began = time.monotonic()
    assert running.cancel() is False
    assert time.monotonic() - began < 2.0
    assert running.result(timeout=30) == 3.0

    # One that ran: nothing to cancel, and its result stands.
    ran = pipeline.submit(after_seconds.with_delay(0), "ran")
    assert ran.result(timeout=30) == "ran"
    assert ran.cancel() is False
    assert ran.result(timeout=1) == "ran"

    async def in_a_coroutine() -> bool:
        later = pipeline.submit(after_seconds.with_delay(60), "async")
        return await later.cancel_async("from a coroutine")

    assert asyncio.run(in_a_coroutine()) is True


def test_the_cli_cancels_the_call_that_replaced_the_one_named(pipeline: Pipeline) -> None:
    user = uuid.uuid4().hex[:8]
    first = pipeline.submit(notify_update.with_delay(60), user, 3, "a")
    latest = pipeline.submit(notify_update.with_delay(60), user, 3, "b")
    pipeline.events.one(latest.id, "scheduled")
    out = cli(pipeline, "cancel", first.id)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"cancelled {latest.id}, which replaced {first.id}"
    with pytest.raises(cf.ExecutionCancelled):
        first.result(timeout=30)


def test_the_cli_says_at_once_that_a_mistyped_id_names_nothing(pipeline: Pipeline) -> None:
    began = time.monotonic()
    out = cli(pipeline, "cancel", "01a25300-0000-7000-8000-000000000000")
    assert out.returncode == 1
    assert "no event names it and no processor holds it" in " ".join(out.stderr.split())
    assert time.monotonic() - began < 25  # not the 30 s wait for a cancel's answer
