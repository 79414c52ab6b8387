"""Processor replicas split the partitions, and a replica killed mid-window loses nothing."""

from __future__ import annotations

import signal
import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient
from harness import Pipeline, PipelineFactory
from pipeline_tasks import after_seconds, notify_update

pytestmark = pytest.mark.kafka


def assignment(admin: AdminClient, group: str, topic: str) -> list[set[int]]:
    """Partitions of ``topic`` held by each member of ``group``."""
    description = admin.describe_consumer_groups([group])[group].result(timeout=30)
    return [{tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic}
            for m in description.members]


def settled_assignment(pipeline: Pipeline, admin: AdminClient, members: int) -> list[set[int]]:
    """The calls partitions each processor holds, once ``members`` replicas hold some."""
    group, topic = f"{pipeline.settings.topic_prefix}.processor", pipeline.settings.calls_topic
    deadline = time.monotonic() + 60
    while True:
        held = assignment(admin, group, topic)
        if len(held) == members and all(held) or time.monotonic() > deadline:
            return held
        time.sleep(0.5)


def test_two_replicas_split_the_partitions_and_still_debounce(
        pipeline_factory: PipelineFactory, admin: AdminClient) -> None:
    pipeline = pipeline_factory(processors=2)
    held = settled_assignment(pipeline, admin, members=2)
    assert len(held) == 2 and all(held), held
    assert held[0].isdisjoint(held[1])
    assert held[0] | held[1] == set(range(pipeline.settings.partitions))

    users = [uuid.uuid4().hex[:8] for _ in range(12)]  # spread over every partition
    calls = {u: [pipeline.submit(notify_update, u, 1, f"edit-{n}") for n in range(3)]
             for u in users}
    for user, made in calls.items():
        assert {pipeline.result(c) for c in made} == {f"{user}:1:edit-2"}
    for made in calls.values():
        pipeline.events.one(made[-1].id, "succeeded")
        assert [bool(pipeline.events.of(c.id, "started")) for c in made] == [False, False, True]


@pytest.mark.parametrize("replicas", [1, 2])
def test_a_replica_killed_mid_window_fires_the_pending_calls_once(
        pipeline_factory: PipelineFactory, admin: AdminClient, replicas: int) -> None:
    pipeline = pipeline_factory(processors=replicas)
    # Submit once the replicas have split the partitions, not during the rebalance.
    assert all(settled_assignment(pipeline, admin, members=replicas))
    delayed = after_seconds.with_delay(6)
    calls = [pipeline.submit(delayed, f"v{i}") for i in range(8)]
    for call in calls:
        pipeline.events.one(call.id, "scheduled", timeout=60)
    pipeline.services.stop("processor-0", sig=signal.SIGKILL)
    pipeline.services.processor("processor-0")

    for i, call in enumerate(calls):
        assert call.result(timeout=120) == f"v{i}"
        start = pipeline.events.one(call.id, "started")
        assert start["ts_ms"] >= start["due_ms"]
    # Give a duplicate fire every chance to show up before counting.
    probe = pipeline.submit(after_seconds.with_delay(0), "probe")
    probe.result(timeout=60)
    pipeline.events.one(probe.id, "succeeded")
    for call in calls:
        assert len(pipeline.events.of(call.id, "started")) == 1
