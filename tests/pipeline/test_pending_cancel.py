"""`cfstream pending` and `cfstream cancel` against running replicas."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest
from harness import Pipeline
from pipeline_tasks import after_seconds, notify_update

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
