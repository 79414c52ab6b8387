"""One chaos run: start everything, submit at a steady rate while killing things, drain, reconcile.

Timeline (every phase has a deadline inside ``duration_limit``):
  broker + topics -> 3 processor replicas, 2 workers -> ready (groups settled, probes ran)
  -> submit N calls at R/s while the chaos thread SIGKILLs processors and workers and restarts
  the broker -> drain (every call deferred or terminal) -> stop the services -> reconcile the
  workers' records with the events topic (and the executions topic, for diagnosis).

With ``nodes`` > 1 (cluster mode) a local KRaft cluster replaces the broker, and the chaos
thread kill -9s partition leaders instead (:mod:`bench.chaos.leaders`): no cfstream process is
killed, so the run also fails on any crash, or on a worst extra delay above
``max_extra_delay_s`` after a leader kill.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench.chaos import leaders, tasks
from bench.chaos.cluster import (
    Cluster,
    describe_errors,
    describe_group,
    group_settled,
    log,
    member_ids,
)
from bench.chaos.reconcile import (
    Disruption,
    IdEvents,
    Submitted,
    read_records,
    reconcile,
    summarize_rejoins,
)
from cfstream.client import Client
from cfstream.clock import now_ms
from cfstream.dev import procs
from cfstream.dev.broker import LocalBroker, LocalKafka
from cfstream.dev.cluster import LocalCluster
from cfstream.errors import CfStreamError, ExecutionFailed
from cfstream.events.tail import tail
from cfstream.execution import Execution
from cfstream.kafka.config import consumer_config
from cfstream.kafka.retry import partitions, watermarks
from cfstream.kafka.topics import ensure_topics
from cfstream.settings import Settings

PROCESSORS = 3
WORKERS = 2
PARTITIONS = 6
# Share of calls that are delay-only (each runs); the rest are deferred (half per deferred task).
DELAY_ONLY_SHARE = 0.2
# Half of the deferred calls go to the hottest 2% of the keys, so keys get calls within one
# debounce window (deferrals) as well as calls far apart (several runs of one key).
HOT_SHARE = 0.5
HOT_FRACTION = 0.02
READY_TIMEOUT = 240.0
# On a cluster the load goes on this long after the last leader kill (its node back in sync), so
# every kill's window holds calls however long the nodes took to come back.
LOAD_AFTER_LAST_KILL = 10.0
# Kafka's group offsets topic, created when the first member looks for its group coordinator.
OFFSETS_TOPIC = "__consumer_offsets"
REJOIN_TIMEOUT = 180.0
# Kept free at the end of the time budget for stopping, reading the topics and reconciling.
TEARDOWN_RESERVE = 150.0
MIN_DRAIN = 60.0
# The drain gives up once no call has resolved for this long: a SIGKILLed worker's partitions
# wait out its consumer session (librdkafka's default, 45 s) before moving.
DRAIN_STALL = 120.0
# After the drain: time for a late duplicate to show up before counting.
SETTLE = 5.0
# Longest wait for one result when they are collected after the load (all have finished).
RESULT_TIMEOUT = 30.0


@dataclass
class Config:
    calls: int = 100_000
    keys: int = 10_000
    rate: float = 150.0
    duration_limit: float = 1200.0
    processor_kills: int = 10
    worker_kills: int = 2
    broker_restart: bool = True
    # Kafka nodes: 1 is a single broker; more is a cluster whose partition leaders are killed.
    nodes: int = 1
    processors: int = PROCESSORS
    workers: int = WORKERS
    # Cluster mode's target (issue #19): no call later than this because of a leader kill.
    max_extra_delay_s: float = 15.0
    # Cluster mode without them: the same load undisturbed, the baseline the kills compare to.
    leader_kills: bool = True
    # result() of every call after the load (slow at hundreds of thousands of calls).
    collect: bool = True
    delay_share: float = DELAY_ONLY_SHARE
    seed: int | None = None
    workdir: Path | None = None
    keep_workdir: bool = False
    json_out: Path | None = None


@dataclass
class RunState:
    calls: list[Submitted] = field(default_factory=list)
    disruptions: list[Disruption] = field(default_factory=list)
    rejoins: list[float | None] = field(default_factory=list)
    worker_rejoins: list[float | None] = field(default_factory=list)
    actions_done: Counter[str] = field(default_factory=Counter)
    chaos_errors: list[str] = field(default_factory=list)


class EventFollower:
    """The events topic, followed in the background: tells when the run has drained."""

    def __init__(self, settings: Settings) -> None:
        self.events: dict[str, IdEvents] = {}
        self.count = 0
        self.lock = threading.Lock()
        self.stopped = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(settings,), daemon=True,
                                       name="chaos-events")
        self.thread.start()

    def _run(self, settings: Settings) -> None:
        try:
            for event in tail(settings, follow=True, stop=lambda: self.stopped):
                execution_id = event.get("id")
                if not isinstance(execution_id, str):
                    continue
                with self.lock:
                    self.events.setdefault(execution_id, IdEvents()).add(event)
                    self.count += 1
        except BaseException as exc:  # noqa: BLE001 - reported, the final read does not need it
            self.error = exc
            log(f"event follower stopped: {exc!r}")

    def resolved(self, execution_id: str) -> bool:
        with self.lock:
            info = self.events.get(execution_id)
            return info is not None and info.resolved

    def unresolved(self, ids: list[str]) -> list[str]:
        with self.lock:
            return [i for i in ids if not (i in self.events and self.events[i].resolved)]

    def close(self) -> None:
        self.stopped = True
        self.thread.join(timeout=10)


def read_events(settings: Settings) -> dict[str, IdEvents]:
    """The whole events topic, from the beginning to its end now."""
    events: dict[str, IdEvents] = {}
    for event in tail(settings):
        execution_id = event.get("id")
        if isinstance(execution_id, str):
            events.setdefault(execution_id, IdEvents()).add(event)
    return events


def count_ids(settings: Settings, topic: str, timeout: float = 180.0) -> Counter[str]:
    """How many records of ``topic`` name each id (the executions topic: fires per id)."""
    consumer = Consumer(consumer_config(settings, None))
    counts: Counter[str] = Counter()
    try:
        ends: dict[int, int] = {}
        for part in partitions(consumer, topic):
            low, high = watermarks(consumer, topic, part)
            if high > low:
                ends[part] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                if message.error() is not None:
                    continue
                p, offset = message.partition(), message.offset()
                try:
                    counts[json.loads(message.value() or b"")["id"]] += 1
                except (ValueError, KeyError, TypeError):
                    pass
                if p in ends and offset is not None and offset + 1 >= ends[p]:
                    del ends[p]
        if ends:
            log(f"reading {topic}: partitions {sorted(ends)} not read to the end in {timeout}s")
    finally:
        consumer.close()
    return counts


class Chaos:
    """Runs the planned kills and restarts, one at a time, at their offsets from ``start``."""

    def __init__(self, cluster: Cluster, config: Config, state: RunState, rng: random.Random,
                 plan: list[tuple[float, str]], start: float, stop_at: float) -> None:
        self.cluster = cluster
        self.config = config
        self.state = state
        self.rng = rng
        self.plan = plan
        self.start = start
        self.stop_at = stop_at
        self.halt = threading.Event()
        self.ended_at: float | None = None  # when the last planned action ended
        # Leader kills: the next comes this long after the one before at the least.
        self.spacing = leaders.MIN_WINDOW_S if config.nodes > 1 else 0.0
        self.monitors: list[threading.Thread] = []
        self.thread = threading.Thread(target=self._run, daemon=True, name="chaos-actions")
        self.supervisor = threading.Thread(target=self._supervise, daemon=True,
                                           name="chaos-supervisor")

    def begin(self) -> None:
        self.thread.start()
        self.supervisor.start()

    def _supervise(self) -> None:
        while not self.halt.wait(1.0):
            self.cluster.supervise()

    def _run(self) -> None:
        try:
            self._act()
        finally:
            self.ended_at = time.monotonic()

    def _act(self) -> None:
        last: float | None = None  # when the last action began
        for offset, action in self.plan:
            at = self.start + offset if last is None else max(self.start + offset,
                                                              last + self.spacing)
            wait = at - time.monotonic()
            if wait > 0 and self.halt.wait(wait):
                return
            if self.halt.is_set() or time.monotonic() > self.stop_at:
                self.state.chaos_errors.append(f"{action} at +{offset:.0f}s skipped: no time left")
                continue
            last = time.monotonic()
            try:
                name, _, argument = action.partition(":")  # "kill_leader:calls"
                getattr(self, f"_{name}")(*([argument] if argument else []))
                self.state.actions_done[action] += 1
            except Exception as exc:  # noqa: BLE001 - a failed action is reported, run goes on
                self.state.chaos_errors.append(f"{action} at +{offset:.0f}s: {exc!r}")
                log(f"chaos action {action} failed: {exc!r}")

    def _kill_processor(self) -> None:
        name = f"processor-{self.rng.randrange(self.config.processors)}"
        group = f"{self.cluster.settings.topic_prefix}.processor"
        admin = self.cluster.groups()
        before = member_ids(describe_group(admin, group))
        killed = now_ms()
        self.cluster.kill(name)
        time.sleep(self.rng.uniform(0.5, 3.0))
        self.cluster.start(name)
        back = now_ms()
        log(f"SIGKILLed {name}, restarted after {(back - killed) / 1000:.1f}s")
        self.state.disruptions.append(Disruption("processor", name, killed, back))
        index = len(self.state.rejoins)
        self.state.rejoins.append(None)
        monitor = threading.Thread(
            target=self._watch_rejoin,
            args=(group, self.cluster.settings.calls_topic, self.config.processors, before, index,
                  self.state.rejoins, name),
            daemon=True, name=f"chaos-rejoin-{index}")
        monitor.start()
        self.monitors.append(monitor)

    def _kill_worker(self) -> None:
        name = f"worker-{self.rng.randrange(self.config.workers)}"
        group = f"{self.cluster.settings.topic_prefix}.workers"
        before = member_ids(describe_group(self.cluster.groups(), group))
        killed = now_ms()
        self.cluster.kill(name)
        time.sleep(1.0)
        self.cluster.start(name)
        back = now_ms()
        log(f"SIGKILLed {name}, restarted after {(back - killed) / 1000:.1f}s")
        self.state.disruptions.append(Disruption("worker", name, killed, back))
        index = len(self.state.worker_rejoins)
        self.state.worker_rejoins.append(None)
        monitor = threading.Thread(
            target=self._watch_rejoin,
            args=(group, self.cluster.settings.executions_topic, self.config.workers, before, index,
                  self.state.worker_rejoins, name),
            daemon=True, name=f"chaos-worker-rejoin-{index}")
        monitor.start()
        self.monitors.append(monitor)

    def _restart_broker(self) -> None:
        log("restarting the broker")
        stopped, back = self.cluster.restart_broker()
        log(f"broker back after {(back - stopped) / 1000:.1f}s")
        self.state.disruptions.append(Disruption("broker", "broker", stopped, back))

    def _kill_leader(self, topic: str) -> None:
        kafka = self.cluster.broker
        assert isinstance(kafka, LocalCluster), "leader kills need a cluster (nodes > 1)"
        self.state.disruptions.append(
            leaders.kill_leader(kafka, self.cluster.settings, topic, self.rng))

    def _watch_rejoin(self, group: str, topic: str, members: int, before: set[str], index: int,
                      into: list[float | None], name: str) -> None:
        """Seconds from the restart until the group is stable with every member (a new one
        among them) holding partitions of ``topic``."""
        started = time.monotonic()
        admin = self.cluster.groups()
        while time.monotonic() - started < REJOIN_TIMEOUT and not self.halt.is_set():
            if group_settled(describe_group(admin, group), members, topic, before):
                into[index] = time.monotonic() - started
                log(f"{name} back in service: group {group} settled "
                    f"{into[index]:.1f}s after its restart")
                return
            time.sleep(0.5)
        last = describe_group(admin, group)
        seen = describe_errors.get(group, "?") if last is None else (
            f"state {last.state}, members "
            + "; ".join(f"{m.member_id[-12:]}: {sorted(m.partitions)}" for m in last.members))
        log(f"{name}: group {group} did not settle within {REJOIN_TIMEOUT:.0f}s; last seen: "
            f"{seen}; members before the kill: {sorted(x[-12:] for x in before)}")

    def within(self, seconds: float) -> Callable[[], bool]:
        """Whether a planned action is still to come, or the last ended less than ``seconds``
        ago."""
        return lambda: (self.thread.is_alive() or self.ended_at is None
                        or time.monotonic() - self.ended_at < seconds)

    def actions_done(self, timeout: float) -> None:
        """Wait for the planned actions (the rejoin monitors keep watching)."""
        self.thread.join(max(0.0, timeout))

    def finish(self, timeout: float) -> None:
        """Wait for the rejoin monitors (bounded), then stop everything of the chaos side."""
        deadline = time.monotonic() + timeout
        for monitor in self.monitors:
            monitor.join(max(0.0, deadline - time.monotonic()))
        self.halt.set()
        self.thread.join(5)
        self.supervisor.join(5)


def plan_chaos(config: Config, duration: float, rng: random.Random) -> list[tuple[float, str]]:
    """Processor kills evenly over the submit phase; the broker restart and worker kills in the
    gaps between them, so each disruption's effect can be told apart. On a cluster: one leader
    kill per topic instead."""
    if config.nodes > 1:
        return leaders.plan(duration) if config.leader_kills else []
    kills = config.processor_kills
    spacing = duration / (kills + 1)
    plan = [(spacing * (j + 1), "kill_processor") for j in range(kills)]
    gaps = [spacing * (j + 0.5) for j in range(1, kills + 1)] or [duration / 2]
    middle = len(gaps) // 2
    if config.broker_restart:
        plan.append((gaps[middle], "restart_broker"))
        others = gaps[:middle] + gaps[middle + 1:]
    else:
        others = gaps
    others = sorted(others, key=lambda g: abs(g - duration / 2))  # spread from the middle out
    for w in range(config.worker_kills):
        if w < len(others):
            plan.append((others[w] + rng.uniform(-0.1, 0.1) * spacing, "kill_worker"))
        else:
            plan.append((duration * (w + 1) / (config.worker_kills + 1) + spacing * 0.25,
                         "kill_worker"))
    return sorted(plan)


def wait_ready(cluster: Cluster, config: Config, client: Client, follower: EventFollower,
               deadline: float) -> float:
    """Until both groups are settled and probes through every partition have run."""
    started = time.monotonic()
    admin = cluster.groups()
    settings = cluster.settings
    groups = [(f"{settings.topic_prefix}.processor", settings.calls_topic, config.processors),
              (f"{settings.topic_prefix}.workers", settings.executions_topic, config.workers)]
    if isinstance(cluster.broker, LocalCluster):
        # Describing a group while the cluster still creates and elects __consumer_offsets
        # aborted this process in librdkafka 2.x (rd_kafka_enq_once_del_source_return: eonce->
        # refcnt > 0) 5 times in 16 cluster runs; the services create it as they join.
        waited = leaders.wait_in_sync(settings.bootstrap_servers, OFFSETS_TOPIC,
                                      cluster.broker.nodes, max(0.0, deadline - started))
        if waited is None:
            raise TimeoutError(f"{OFFSETS_TOPIC} not created and in sync before the deadline")
    pending = list(groups)
    while pending and time.monotonic() < deadline:
        cluster.supervise()
        pending = [g for g in pending if not group_settled(describe_group(admin, g[0]), g[2],
                                                           g[1])]
        time.sleep(0.5)
    if pending:
        raise TimeoutError(f"groups not settled before the deadline: {[g[0] for g in pending]}")
    probes = [tasks.probe.submit_to(client, n).id for n in range(4 * PARTITIONS)]
    client.flush(30)
    while time.monotonic() < deadline:
        cluster.supervise()
        if not follower.unresolved(probes):
            return time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(f"{len(follower.unresolved(probes))} probes did not run before the deadline")


def produce(config: Config, client: Client, state: RunState, rng: random.Random,
            follower: EventFollower, start: float, cutoff: float,
            more: Callable[[], bool] = lambda: False) -> None:
    """``config.calls`` calls at ``config.rate``, then more at that rate while ``more()``."""
    delayed = {d: tasks.delayed.with_delay(d) for d in tasks.DELAYS}
    hot = max(1, int(config.keys * HOT_FRACTION))
    last_log = time.monotonic()
    for i in itertools.count():
        if i >= config.calls and not more():
            break
        target = start + i / config.rate
        now = time.monotonic()
        if now >= cutoff:
            log(f"submit phase cut off by the time limit after {i} calls")
            break
        if target > now:
            time.sleep(target - now)
        if rng.random() < config.delay_share:
            kind, key = "delay", f"d{i}"
            execution = delayed[rng.choice(tasks.DELAYS)].submit_to(client, key, i)
        else:
            index = rng.randrange(hot) if rng.random() < HOT_SHARE else rng.randrange(config.keys)
            key = f"k{index}"
            if index % 2 == 0:
                kind = "all"
                execution = tasks.debounce_all.submit_to(client, key)
            else:
                kind = "key"
                execution = tasks.debounce_key.submit_to(client, key, i)
        state.calls.append(Submitted(i, execution.id, kind, key, i, now_ms()))
        if time.monotonic() - last_log >= 15:
            last_log = time.monotonic()
            behind = max(0.0, time.monotonic() - target)
            log(f"submitted {i + 1}/{config.calls} ({behind:.1f}s behind schedule), "
                f"{follower.count} events read")


def run(config: Config) -> dict[str, Any]:
    t0 = time.monotonic()
    hard_deadline = t0 + config.duration_limit
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    workdir = Path(config.workdir or tempfile.mkdtemp(prefix="cfstream-chaos-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    record_dir = workdir / "records"
    record_dir.mkdir(exist_ok=True)
    log(f"seed {seed}, workdir {workdir}")

    broker: LocalBroker | LocalCluster
    if config.nodes > 1:
        broker = LocalCluster(nodes=config.nodes, data_dir=workdir / "kafka")
    else:
        broker = LocalBroker(port=procs.free_port(), data_dir=workdir / "kafka")
    cluster: Cluster | None = None
    follower: EventFollower | None = None
    finished = threading.Event()
    watchdog = threading.Thread(target=_watchdog, args=(hard_deadline + 90, finished,
                                                        lambda: cluster, broker),
                                daemon=True, name="chaos-watchdog")
    watchdog.start()
    state = RunState()
    summary: dict[str, Any] = {}
    ok = False
    try:
        broker.start()
        bootstrap = broker.bootstrap_servers
        log(f"{'cluster' if config.nodes > 1 else 'broker'} on {bootstrap}")
        # The harness's own clients stay quiet while the broker restarts (log_level 2: only
        # critical); the services get none of this, their settings come from CFSTREAM_* alone.
        settings = Settings(bootstrap_servers=bootstrap,
                            topic_prefix=f"chaos-{uuid.uuid4().hex[:8]}", partitions=PARTITIONS,
                            kafka_config={"log_level": 2})
        logging.getLogger("cfstream.kafka").setLevel(logging.ERROR)
        ensure_topics(settings)
        cluster = Cluster(settings, workdir, broker)
        for n in range(config.processors):
            cluster.add_processor(f"processor-{n}")
        for n in range(config.workers):
            cluster.add_worker(f"worker-{n}", record_dir)
        follower = EventFollower(settings)
        client = Client(settings)
        ready_s = wait_ready(cluster, config, client, follower,
                             min(hard_deadline, t0 + READY_TIMEOUT))
        log(f"ready after {ready_s:.1f}s (since start {time.monotonic() - t0:.1f}s)")

        submit_start = time.monotonic()
        duration = config.calls / config.rate
        cutoff = hard_deadline - TEARDOWN_RESERVE - MIN_DRAIN
        if submit_start + duration > cutoff:
            log(f"WARNING: {config.calls} calls at {config.rate}/s take {duration:.0f}s, more "
                f"than the {cutoff - submit_start:.0f}s the time limit leaves")
        plan = plan_chaos(config, min(duration, cutoff - submit_start), rng)
        log("chaos plan: " + ", ".join(f"+{o:.0f}s {a}" for o, a in plan))
        chaos = Chaos(cluster, config, state, rng, plan, submit_start, cutoff)
        chaos.begin()
        # On a cluster each kill waits for the last node to be back in sync, which under load
        # took up to 36 s: the load lasts until the last kill is LOAD_AFTER_LAST_KILL behind.
        produce(config, client, state, rng, follower, submit_start, cutoff,
                more=chaos.within(LOAD_AFTER_LAST_KILL) if config.nodes > 1 else lambda: False)
        left = client.flush(60)
        submit_s = time.monotonic() - submit_start
        log(f"submitted {len(state.calls)} calls in {submit_s:.0f}s"
            + (f"; {left} still queued" if left else ""))
        chaos.actions_done(timeout=hard_deadline - TEARDOWN_RESERVE - time.monotonic())

        drain_start = time.monotonic()
        drain_deadline = hard_deadline - TEARDOWN_RESERVE
        waiting = [c.id for c in state.calls]
        last_progress = time.monotonic()
        while time.monotonic() < drain_deadline:
            cluster.supervise()
            still = follower.unresolved(waiting)
            if len(still) < len(waiting):
                last_progress = time.monotonic()
            waiting = still
            if not waiting:
                break
            if time.monotonic() - last_progress > DRAIN_STALL:
                log(f"drain: no call resolved for {DRAIN_STALL:.0f}s; giving up on "
                    f"{len(waiting)}")
                break
            time.sleep(1.0)
        log(f"drain: {len(waiting)} calls unresolved after "
            f"{time.monotonic() - drain_start:.0f}s")
        time.sleep(SETTLE)
        run_end = now_ms()
        chaos.finish(timeout=min(REJOIN_TIMEOUT, drain_deadline - time.monotonic()))
        collected = (collect_results(client, state.calls, hard_deadline - TEARDOWN_RESERVE / 2)
                     if config.collect else {})
        log(f"collect: {collected or 'skipped'}")

        cluster.stop_all()
        undelivered = {c.id for c in state.calls if client.delivery_error(c.id) is not None}
        client.close()
        follower.close()
        log("reading the events and executions topics")
        events = read_events(settings)
        fired = count_ids(settings, settings.executions_topic)
        records, bad_lines = read_records(record_dir)
        disruptions = state.disruptions + [
            Disruption("crash", c.name, c.ts_ms, c.ts_ms) for c in cluster.crashes]
        summary = reconcile(state.calls, records, events, fired, disruptions, undelivered,
                            run_end)
        summary.update({
            "seed": seed,
            "config": {k: str(v) if isinstance(v, Path) else v
                       for k, v in asdict(config).items()},
            "workdir": str(workdir),
            "ready_s": round(ready_s, 1),
            "submit_s": round(submit_s, 1),
            "drain_s": round(time.monotonic() - drain_start, 1),
            "unresolved_at_drain_end": len(waiting),
            "bad_record_lines": bad_lines,
            "actions": dict(state.actions_done),
            "chaos_errors": state.chaos_errors,
            "rejoin": summarize_rejoins(state.rejoins),
            "worker_rejoin": summarize_rejoins(state.worker_rejoins),
            "crashes": [{"name": c.name, "returncode": c.returncode, "ts_ms": c.ts_ms,
                         "log_tail": c.log_tail} for c in cluster.crashes],
            "follower_error": repr(follower.error) if follower.error else None,
            "collect": collected,
            "total_s": round(time.monotonic() - t0, 1),
        })
        summary["rate"] = round(len(state.calls) / max(submit_s, 1e-9), 1)
        summary["worst_extra_delay_s"] = worst_extra_delays(summary["windows"])
        ok = summary["lost"] == 0 and summary["duplicated"] == 0 \
            and summary["superseded_ran"] == 0
        if config.nodes > 1:
            leader_kills = [k for k in summary["worst_extra_delay_s"] if k.startswith("leader:")]
            ok = ok and not cluster.crashes and not state.chaos_errors \
                and len(leader_kills) == (len(leaders.TOPICS) if config.leader_kills else 0) \
                and all(summary["worst_extra_delay_s"][k] <= config.max_extra_delay_s
                        for k in leader_kills)
        summary["ok"] = ok
        return summary
    finally:
        if follower is not None:
            follower.close()
        if cluster is not None:
            cluster.stop_all()
        broker.stop(remove_data=False)
        finished.set()
        if config.json_out is not None and summary:
            config.json_out.write_text(json.dumps(summary, indent=1, default=str))
        if ok and not config.keep_workdir and config.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"logs and records kept in {workdir}")


def collect_results(client: Client, calls: list[Submitted], deadline: float) -> dict[str, Any]:
    """``result()`` of every call, one after another in submit order, after the load (what a
    user who submitted a batch does): how long that takes, and what came back."""
    outcomes: Counter[str] = Counter()
    began = time.monotonic()
    for call in calls:
        left = deadline - time.monotonic()
        if left <= 0:
            outcomes["not asked (out of time)"] += 1
            continue
        try:
            Execution(call.id, client=client).result(timeout=min(RESULT_TIMEOUT, left))
            outcomes["returned"] += 1
        except TimeoutError:
            outcomes["timed out"] += 1
        except ExecutionFailed as error:  # WorkerLost: begun by a killed worker, not run again
            outcomes[f"failed: {error.error_type}"] += 1
        except CfStreamError as error:
            outcomes[type(error).__name__] += 1
    took = time.monotonic() - began
    return {"calls": len(calls), "seconds": round(took, 2),
            "ms_per_result": round(1000 * took / max(len(calls), 1), 3), **outcomes}


def worst_extra_delays(windows: list[dict[str, Any]]) -> dict[str, float]:
    """The worst extra delay after each kind of disruption (``leader:calls``, ``processor``...)."""
    worst: dict[str, float] = {}
    for w in windows:
        worst[w["kind"]] = max(worst.get(w["kind"], 0.0), w["worst_extra_delay_s"])
    return worst


def _watchdog(deadline: float, finished: threading.Event, cluster: Any,
              broker: LocalKafka) -> None:
    """The run's last resort: past the deadline, kill everything and exit."""
    if finished.wait(max(0.0, deadline - time.monotonic())):
        return
    log("WATCHDOG: the run overran its time limit; killing everything")
    running = cluster()
    if running is not None:
        running.kill_all_now()
    try:
        broker.stop(remove_data=False)
    finally:
        os._exit(3)


def install_signal_handlers() -> None:
    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def report(summary: dict[str, Any]) -> str:
    """The figures, for people."""
    lines = []
    lat = summary["lateness_s"]
    windows = summary["windows"]

    def worst(kind: str) -> str:
        chosen = [w for w in windows if w["kind"] == kind]
        if not chosen:
            return "n/a"
        extra = max(w["worst_extra_delay_s"] for w in chosen)
        until = max(w["late_until_s"] for w in chosen)
        return f"{extra:.2f}s (lateness > 1s until {until:.1f}s after the kill, worst case)"

    rejoin = summary["rejoin"]
    lines += [
        f"seed                {summary['seed']}",
        f"submitted           {summary['submitted']} (undelivered by the client: "
        f"{summary['undelivered']})",
        f"executed            {summary['executed']} distinct ids, {summary['record_lines']} "
        f"record lines (must run: {summary['must_run']})",
        f"deferred            {summary['deferred']} {summary['deferred_by_reason']}",
        f"lost                {summary['lost']} (never fired: "
        f"{summary['diagnosis']['lost_never_fired']}, unresolved at the end: "
        f"{summary['diagnosis']['lost_unresolved']})",
        f"cut short           {summary['cut_short']} (begun by a killed worker, reported "
        f"failed: WorkerLost, not run again)",
        f"duplicated          {summary['duplicated']} (fired twice by processors: "
        f"{summary['diagnosis']['duplicated_fired_twice']}, fired once: "
        f"{summary['diagnosis']['duplicated_fired_once']})",
        f"superseded that ran {summary['superseded_ran']} (deferred before it started); "
        f"deferred after it ran: {summary['deferred_after_start']}; latest call deferred: "
        f"{summary['latest_deferred']}; wrong value: {summary['wrong_value']}",
        f"lateness            p50 {lat['p50']:.3f}s  p99 {lat['p99']:.3f}s  max {lat['max']:.3f}s",
        *([f"worst extra delay   after a processor kill: {worst('processor')}",
           f"                    after a worker kill: {worst('worker')}",
           f"                    after the broker restart: {worst('broker')}"]
          if summary["config"]["nodes"] <= 1 else
          [f"{'worst extra delay' if n == 0 else '':20}after a kill -9 of the leader of {t}: "
           f"{worst(leaders.kind(t))}" for n, t in enumerate(leaders.TOPICS)]),
        f"rate                {summary['rate']} calls/s submitted",
        f"replica back        group rejoin after restart: median {rejoin['median_s']} s, "
        f"max {rejoin['max_s']} s, timed out {rejoin['timed_out']} ({rejoin['all_s']})",
        f"worker back         {summary['worker_rejoin']['all_s']} s",
        f"chaos               {summary['actions']}; errors: {summary['chaos_errors']}",
        f"crashes             {len(summary['crashes'])} "
        f"{[c['name'] for c in summary['crashes']]}",
        f"timing              ready {summary['ready_s']}s, submit {summary['submit_s']}s, "
        f"drain {summary['drain_s']}s, total {summary['total_s']}s",
        f"results collected   one by one after the load: {summary['collect']}",
    ]
    for what in ("lost", "duplicated", "superseded_ran", "deferred_after_start", "most_late"):
        for item in summary["diagnosis"][what][:5]:
            lines.append(f"  {what}: {json.dumps(item, default=str)}")
    lines.append("RESULT: " + ("OK" if summary["ok"] else "FAILED"))
    return "\n".join(lines)
