"""Static membership (CFSTREAM_INSTANCE_ID) with real processes on the real broker.

A static replica killed and back within its session keeps its partitions, with no rebalance; a
SIGTERM hands them over at once (well before the session would run out), unless
CFSTREAM_LEAVE_ON_STOP=false keeps them for a restart; a fenced replica joins again in place,
unless a second process under the same id fences it again; and static members still work under
KIP-848. The group is watched through
describe_consumer_groups all along (tests/pipeline/harness.py's GroupWatch).
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient
from harness import LATE_MS, Event, GroupSnapshot, GroupWatch, Pipeline, PipelineFactory
from pipeline_tasks import after_seconds

import cfstream as cf
from cfstream.clock import now_ms
from cfstream.dev.services import Service
from cfstream.kafka.config import group_config
from cfstream.kafka.partitioner import partition_for
from cfstream.processor.membership import SESSION_TIMEOUT_MS
from cfstream.service import RET_FENCED

pytestmark = pytest.mark.kafka

NAMES = ("processor-0", "processor-1")
# A session long enough that a handover within a few seconds can only be the leave.
LONG_SESSION_MS = 30_000
# A restarted replica opens its DBs and restores its tail before it fires what came due while it
# was away: on top of LATE_MS, up to this long on a loaded 2-core machine.
RESTART_MS = 3_000
RESTORED = re.compile(r"running from offset \d+ \((\d+) changelog records restored, ([^)]+)\)")


def static_processor(pipeline: Pipeline, name: str, **env: str) -> Service:
    """A processor replica whose instance id is its name."""
    return pipeline.services.processor(name, CFSTREAM_INSTANCE_ID=name, **env)


def kafka_config(**options: object) -> dict[str, str]:
    return {"CFSTREAM_KAFKA_CONFIG": json.dumps(options)}


@contextmanager
def two_static_replicas(pipeline_factory: PipelineFactory, admin: AdminClient,
                        **env: str) -> Iterator[tuple[Pipeline, GroupWatch, GroupSnapshot]]:
    """Replicas processor-0 and processor-1 (and a worker), the group watched, and its first
    snapshot in which each holds half of the partitions."""
    pipeline = pipeline_factory(start=False)
    for name in NAMES:
        static_processor(pipeline, name, **env)
    pipeline.services.worker("worker-0")
    pipeline.wait_ready()
    watch = GroupWatch(admin, pipeline.settings)
    try:
        everything = frozenset(range(pipeline.settings.partitions))
        settled = watch.wait_for(
            lambda s: s.state == "STABLE" and set(s.held) == set(NAMES)
            and all(s.held.values()) and frozenset().union(*s.held.values()) == everything,
            timeout=60)
        yield pipeline, watch, settled
    finally:
        watch.close()


def pending_calls(pipeline: Pipeline, delay: float) -> dict[str, cf.Execution]:
    """Calls due in ``delay`` seconds by their tag, at least two on each calls partition, all
    scheduled."""
    partitions = pipeline.settings.partitions
    task = after_seconds.with_delay(delay)
    calls: dict[str, cf.Execution] = {}
    on: dict[int, int] = dict.fromkeys(range(partitions), 0)
    while min(on.values()) < 2:
        tag = f"v{len(calls)}"
        calls[tag] = pipeline.submit(task, tag)
        on[partition_for(calls[tag].id.encode(), partitions)] += 1
    for call in calls.values():
        pipeline.events.one(call.id, "scheduled", timeout=60)
    return calls


def fired_once(pipeline: Pipeline, calls: dict[str, cf.Execution]) -> list[Event]:
    """Each call's one ``started`` event: every call ran (lost 0), none twice (duplicated 0)."""
    for tag, call in calls.items():
        assert pipeline.result(call, timeout=120) == tag
    # Give a duplicate fire every chance to show up before counting.
    probe = pipeline.submit(after_seconds.with_delay(0), "probe")
    pipeline.result(probe)
    pipeline.events.one(probe.id, "succeeded")
    starts = [pipeline.events.of(call.id, "started") for call in calls.values()]
    assert [len(s) for s in starts] == [1] * len(calls)
    return [s[0] for s in starts]


def assert_on_time(starts: list[Event], back_ms: int) -> None:
    """Each start came at its due time, or soon after ``back_ms`` (when a replica came back or
    took over) if it was due before that."""
    for start in starts:
        latest = max(start["due_ms"], back_ms + RESTART_MS) + LATE_MS
        assert start["due_ms"] <= start["ts_ms"] <= latest, start


def rejoined(name: str, before: GroupSnapshot) -> Callable[[GroupSnapshot], bool]:
    """Matches a snapshot in which ``name`` is a member again, under a new member id."""
    return lambda s: s.member_ids.get(name) not in (None, before.member_ids[name])


def assert_no_rebalance(watch: GroupWatch, since_ms: int, before: GroupSnapshot) -> None:
    """Every snapshot since ``since_ms``: the group stable, every member holding what it held."""
    snapshots = watch.since(since_ms)
    assert snapshots
    for snapshot in snapshots:
        assert snapshot.state == "STABLE", snapshot
        assert snapshot.held == before.held, snapshot


def test_a_static_replica_killed_and_back_within_its_session_keeps_its_partitions(
        pipeline_factory: PipelineFactory, admin: AdminClient) -> None:
    with two_static_replicas(pipeline_factory, admin) as (pipeline, watch, before):
        calls = pending_calls(pipeline, delay=4)
        survivor = pipeline.services.started["processor-1"]
        survivor_seen = len(survivor.log())
        killed_at = now_ms()
        pipeline.services.stop("processor-0", sig=signal.SIGKILL)
        static_processor(pipeline, "processor-0")
        back = watch.wait_for(rejoined("processor-0", before), timeout=30, since_ms=killed_at)
        print(f"back {back.at_ms - killed_at} ms after the kill")
        assert back.at_ms - killed_at < SESSION_TIMEOUT_MS, "not back within the session"

        starts = fired_once(pipeline, calls)
        assert_no_rebalance(watch, killed_at, before)
        moves = re.compile(rf"(assigned|revoked|lost) {re.escape(pipeline.settings.calls_topic)}")
        assert not moves.search(survivor.log()[survivor_seen:])
        assert_on_time(starts, back.at_ms)


def test_sigterm_hands_a_static_replicas_partitions_over_at_once(
        pipeline_factory: PipelineFactory, admin: AdminClient) -> None:
    long_session = kafka_config(**{"session.timeout.ms": LONG_SESSION_MS})
    with two_static_replicas(pipeline_factory, admin, **long_session) as (
            pipeline, watch, before):
        calls = pending_calls(pipeline, delay=3)
        stopping = pipeline.services.started["processor-0"]
        stopped_at = now_ms()
        assert pipeline.services.stop("processor-0") == 0
        everything = frozenset(range(pipeline.settings.partitions))
        moved = watch.wait_for(lambda s: s.state == "STABLE" and s.held == {NAMES[1]: everything},
                               timeout=LONG_SESSION_MS / 2000, since_ms=stopped_at)
        print(f"handed over {moved.at_ms - stopped_at} ms after SIGTERM")
        assert moved.at_ms - stopped_at < 5_000
        assert "left the group in" in stopping.tail(50)

        assert_on_time(fired_once(pipeline, calls), moved.at_ms)


def test_a_replica_that_stays_through_a_stop_keeps_its_partitions(
        pipeline_factory: PipelineFactory, admin: AdminClient) -> None:
    stay = {"CFSTREAM_LEAVE_ON_STOP": "false"}
    with two_static_replicas(pipeline_factory, admin, **stay) as (pipeline, watch, before):
        calls = pending_calls(pipeline, delay=4)
        stopped_at = now_ms()
        assert pipeline.services.stop("processor-0") == 0
        restarted = static_processor(pipeline, "processor-0", **stay)
        back = watch.wait_for(rejoined("processor-0", before), timeout=30, since_ms=stopped_at)
        print(f"back {back.at_ms - stopped_at} ms after SIGTERM")
        assert back.at_ms - stopped_at < SESSION_TIMEOUT_MS, "not back within the session"

        starts = fired_once(pipeline, calls)
        assert_no_rebalance(watch, stopped_at, before)
        assert_on_time(starts, back.at_ms)
        # It ran on its own disk: nothing to restore after a clean stop.
        restored = [(int(n), source) for n, source in RESTORED.findall(restarted.tail(200))]
        assert restored == [(0, "from its disk")] * len(before.held["processor-0"])


def test_a_fenced_replica_joins_again_in_place(pipeline_factory: PipelineFactory) -> None:
    """What librdkafka#3437 does to a replica whose session timed out on its side, made here
    by a consumer joining under its id: the replica is fenced, drops its partitions and joins
    again with a new consumer, in the same process; the intruder is fenced in turn."""
    pipeline = pipeline_factory(start=False)
    replica = static_processor(pipeline, "processor-0")
    pipeline.services.worker("worker-0")
    pipeline.wait_ready()
    settings = pipeline.settings
    intruder = Consumer(group_config(settings, settings.processor_group, session_timeout_ms=6000,
                                     instance_id="processor-0"))
    try:
        intruder.subscribe([settings.calls_topic])
        deadline = time.monotonic() + 60
        fenced = False
        while not fenced and time.monotonic() < deadline:
            message = intruder.poll(0.2)
            fenced = message is not None and message.error() is not None and (
                "fenced" in message.error().str().lower())
        assert fenced, "the replica did not take its id back"
    finally:
        with contextlib.suppress(KafkaException):
            intruder.close()
    assert replica.running, replica.tail(30)
    assert "dropping its partitions uncommitted and joining again" in replica.log()
    call = pipeline.submit(after_seconds.with_delay(0), "after the fence")
    assert pipeline.result(call) == "after the fence"
    assert replica.running


def test_a_second_process_under_the_same_id_stops_the_first(
        pipeline_factory: PipelineFactory) -> None:
    """Each fences the other once (each joins again in place); fenced a second time, the first
    stops, and the newcomer keeps the partitions."""
    pipeline = pipeline_factory(start=False)
    first = static_processor(pipeline, "processor-0")
    pipeline.services.worker("worker-0")
    pipeline.wait_ready()
    second = pipeline.services.processor("processor-0b", CFSTREAM_INSTANCE_ID="processor-0")
    assert first.wait(90) == RET_FENCED, first.tail(30)
    assert "fenced as CFSTREAM_INSTANCE_ID=processor-0" in first.tail(50)
    assert "most likely another process runs under this id" in first.tail(50)
    # The newcomer holds the partitions now.
    call = pipeline.submit(after_seconds.with_delay(0), "after the fence")
    assert pipeline.result(call) == "after the fence"
    assert second.running


def test_static_replicas_under_kip848_come_back_to_their_partitions(
        pipeline_factory: PipelineFactory, admin: AdminClient) -> None:
    kip848 = kafka_config(**{"group.protocol": "consumer"})
    with two_static_replicas(pipeline_factory, admin, **kip848) as (pipeline, watch, before):
        calls = pending_calls(pipeline, delay=4)
        stopped_at = now_ms()
        assert pipeline.services.stop("processor-0") == 0
        restarted = static_processor(pipeline, "processor-0", **kip848)
        back = watch.wait_for(lambda s: s.held == before.held and rejoined("processor-0", before)(s),
                              timeout=30, since_ms=stopped_at)
        assert_on_time(fired_once(pipeline, calls), back.at_ms)
        assert "cannot make a static member leave for good" in restarted.tail(200)
