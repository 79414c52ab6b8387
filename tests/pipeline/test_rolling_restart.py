"""A rolling restart of three static processor replicas under load (issue #19), real processes on
the real broker, the way a Kubernetes StatefulSet update goes: SIGTERM the highest ordinal (leave
mode, the default: it hands its partitions over at once), start it again, wait until it is ready
and runs the partitions the group gave it, then the next.

The replicas hold a pending state written straight to the changelog before they start (5,000
keys a partition, due in an hour: as bench/scale.py builds it), so a takeover that restores a
partition cold replays far more than one that restores only a tail. Asserted: every call ran
exactly once (lost 0, duplicated 0), each started at most 5 s after its due time (the events'
timestamps), and no takeover during the restart restored more changelog records than the load
wrote to that partition during the restart (its tail), i.e. never the pending state again:
with warm replicas (standby copies, brought up to date before the restart begins) a takeover
replays a copy's lag or its own disk's tail. A build without them (no standby metrics) restores
cold, and that last assertion is an xfail naming the takeovers.

``bench/rolling.py`` measures the same at 24 partitions and 1M keys, beside raw Kafka.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient
from harness import Event, GroupSnapshot, GroupWatch, Pipeline, PipelineFactory
from pipeline_tasks import after_seconds, notify

import cfstream as cf
from bench import env, scale
from bench.rolling import Takeover, running, takeovers, wait_standbys
from cfstream.clock import now_ms
from cfstream.dev import procs
from cfstream.dev.services import START_MARK, Service

pytestmark = pytest.mark.kafka

NAMES = ("processor-0", "processor-1", "processor-2")
# 5,000 keys on each of the pipeline's 4 partitions: a cold restore replays 5,000+ records, the
# load's tail on a partition over the whole restart is a few hundred.
PENDING_KEYS = 20_000
DELAY_S = 1.0
RATE = 50.0  # calls per second, a tenth of them deferring the call before them
LATE_LIMIT_MS = 5_000  # issue #19's target for a rolling restart
READY_TIMEOUT_S = 60.0
# With warm replicas (CFSTREAM_STANDBY_REPLICAS), how long the replicas may take to bring every
# partition's standby copy up to date before the restart begins, and how close that is.
STANDBY_TIMEOUT_S = 60.0
STANDBY_CAUGHT_UP = 100  # records a copy may lag and still count as warm


def static_replica(pipeline: Pipeline, name: str) -> Service:
    return pipeline.services.processor(
        name, CFSTREAM_INSTANCE_ID=name, CFSTREAM_HTTP_PORT=str(procs.free_port()),
        # Standby copies start at once (default 30 s): the test restarts within a minute.
        CFSTREAM_STANDBY_DELAY="0")


def runs(service: Service) -> set[int]:
    """The partitions the replica runs, by its log since its latest start."""
    return running(service.log().rsplit(START_MARK, 1)[-1])


def all_running(pipeline: Pipeline) -> Callable[[GroupSnapshot], bool]:
    """Matches the group split between the three replicas, each running all it holds."""
    everything = frozenset(range(pipeline.settings.partitions))
    started = pipeline.services.started

    def split(s: GroupSnapshot) -> bool:
        return (s.state == "STABLE" and set(s.held) == set(NAMES) and all(s.held.values())
                and frozenset().union(*s.held.values()) == everything
                and all(s.held[name] <= runs(started[name]) for name in NAMES))

    return split


def restart(pipeline: Pipeline, watch: GroupWatch, name: str) -> float:
    """SIGTERM ``name``, start it again, and wait until it answers /readyz 200 and the group is
    split again with it (a new member) running its share; the seconds that took."""
    stopped_at = now_ms()
    member_id = watch.wait_for(lambda s: name in s.member_ids, timeout=10,
                               since_ms=stopped_at).member_ids[name]
    assert pipeline.services.stop(name) == 0
    static_replica(pipeline, name).wait_ready(READY_TIMEOUT_S)
    back = all_running(pipeline)
    watch.wait_for(lambda s: s.member_ids.get(name) not in (None, member_id) and back(s),
                   timeout=READY_TIMEOUT_S, since_ms=stopped_at)
    return (now_ms() - stopped_at) / 1000


class Load(threading.Thread):
    """Calls due in DELAY_S at RATE, until stopped: each distinct, but every tenth a pair of
    calls with one defer key, the first replaced by the second."""

    def __init__(self, pipeline: Pipeline) -> None:
        super().__init__(daemon=True)
        self.pipeline = pipeline
        self.calls: list[cf.Execution] = []
        self.replaced: list[cf.Execution] = []  # the first call of each pair
        self.stopping = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        delayed, deferred = after_seconds.with_delay(DELAY_S), notify.with_delay(DELAY_S)
        i = 0
        while not self.stopping.is_set():
            if i % 10 == 9:
                self.replaced.append(self.pipeline.submit(deferred, f"u{i}", i))
                self.calls.append(self.pipeline.submit(deferred, f"u{i}", i))
            else:
                self.calls.append(self.pipeline.submit(delayed, f"c{i}"))
            i += 1
            self.stopping.wait(max(0.0, started + i / RATE - time.monotonic()))

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


def restored_over_tail(found: list[Takeover], tails: dict[int, int]) -> list[str]:
    return [f"{t.replica} restored {t.restored} records of partition {t.partition} "
            f"({t.source}{', inferred' if t.inferred else ''}; its tail: {tails[t.partition]})"
            for t in found if t.restored > tails[t.partition]]


@pytest.mark.timeout(240)
def test_a_rolling_restart_loses_nothing_runs_nothing_twice_and_restores_only_tails(
        pipeline_factory: PipelineFactory, admin: AdminClient) -> None:
    began = time.monotonic()
    pipeline = pipeline_factory(start=False)
    settings = pipeline.settings
    scale.write_changelog(settings, env.raw_producer(settings), 0, PENDING_KEYS)
    for name in NAMES:
        static_replica(pipeline, name)
    pipeline.services.worker("worker-0")
    pipeline.wait_ready()
    watch = GroupWatch(admin, settings)
    load = Load(pipeline)
    try:
        watch.wait_for(all_running(pipeline), timeout=READY_TIMEOUT_S)
        lags = wait_standbys([pipeline.services.started[name] for name in NAMES],
                             settings.partitions, STANDBY_CAUGHT_UP, STANDBY_TIMEOUT_S)
        assert lags is None or (len(lags) == settings.partitions and max(lags.values())
                                <= STANDBY_CAUGHT_UP), f"standby copies' lags: {lags}"
        load.start()
        restart_ms = now_ms()
        ends_before = env.end_offsets(settings, settings.changelog_topic)
        steps = [f"{name} back in {restart(pipeline, watch, name):.1f}s"
                 for name in reversed(NAMES)]
        load.stop()
        ends_after = env.end_offsets(settings, settings.changelog_topic)
    finally:
        load.stop()
        watch.close()
    print(f"restarts: {', '.join(steps)}; {len(load.calls) + len(load.replaced)} calls")

    starts = ran_once(pipeline, load)
    lateness = sorted(s["ts_ms"] - s["due_ms"] for s in starts)
    print(f"lateness ms: p50 {lateness[len(lateness) // 2]}, max {lateness[-1]}")
    assert lateness[-1] <= LATE_LIMIT_MS, [s for s in starts
                                           if s["ts_ms"] - s["due_ms"] > LATE_LIMIT_MS]

    tails = {p: ends_after[p] - ends_before[p] for p in ends_after}
    found = [t for name in NAMES
             for t in takeovers(pipeline.services.log(name), name) if t.at_ms >= restart_ms]
    print(f"tails {tails}; takeovers: "
          + ", ".join(f"{t.replica}[{t.partition}] {t.restored} {t.source}" for t in found))
    over = restored_over_tail(found, tails)
    print(f"whole test: {time.monotonic() - began:.0f}s")
    if over and lags is None:
        pytest.xfail("no warm replicas in this build (CFSTREAM_STANDBY_REPLICAS): "
                     + "; ".join(over))
    assert not over


def ran_once(pipeline: Pipeline, load: Load) -> list[Event]:
    """Every call's one ``started`` event (a replaced call: its ``deferred`` event instead, or
    one start if it came due before its successor was read)."""
    for call in load.calls:
        pipeline.result(call, timeout=120)
    # Give a duplicate start every chance to show up before counting.
    probe = pipeline.submit(after_seconds.with_delay(0), "probe")
    pipeline.result(probe)
    pipeline.events.one(probe.id, "succeeded")
    starts: list[Event] = []
    lost, twice = [], []
    for call in load.calls + load.replaced:
        started = pipeline.events.of(call.id, "started")
        deferred = pipeline.events.of(call.id, "deferred")
        if len(started) + bool(deferred) == 0:
            lost.append(call.id)
        elif len(started) + bool(deferred) > 1:
            twice.append((call.id, [e["type"] for e in pipeline.events.of(call.id)]))
        starts.extend(started[:1])
    assert lost == [], f"{len(lost)} calls neither ran nor were deferred"
    assert twice == [], f"{len(twice)} calls ran twice, or ran and were deferred: {twice[:5]}"
    return starts
