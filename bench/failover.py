"""7. Failover: one of two processor replicas killed with SIGKILL while calls come due.

Two replicas hold ``keys`` pending calls (due in an hour, written to the changelog as in the
pending benchmark) and split the partitions. Calls with a 1 s delay (distinct keys) are then
submitted at a steady rate; a few seconds in, one replica is killed (``kill -9``, not
restarted). From the executions topic:

- **takeover**: the latest any call of the killed replica's partitions, due after the kill,
  fired (execution record timestamp minus due time): how long those partitions went unserved;
- **survivor**: fire lateness of the calls of the survivor's own partitions due within 20 s of
  the kill, through the rebalance (p50 / p99).

Baseline, in the same run: two raw confluent-kafka group members (``bench.raw_member``, the same
membership settings) relay a topic produced at the same rate; one is killed the same way. Its
takeover is the group's own floor: the session timeout plus a rebalance.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import murmur2
from confluent_kafka.admin import AdminClient

from bench import calls, env, scale
from cfstream.client import Client
from cfstream.clock import now_ms
from cfstream.dev.services import Service
from cfstream.kafka.config import admin_config
from cfstream.kafka.topics import ensure_topics
from cfstream.settings import Settings

DELAY_MS = 1_000
KILL_AFTER_S = 6.0
SURVIVOR_WINDOW_MS = 20_000
TAKEOVER_TARGET_S = 15.0
SURVIVOR_P99_TARGET_MS = 100.0
RAW_MEMBER = (sys.executable, "-m", "bench.raw_member")


def owners(settings: Settings, group: str, topic: str) -> dict[str, set[int]]:
    """client.id -> partitions of ``topic`` each member of ``group`` holds."""
    admin = AdminClient(admin_config(settings))
    description = admin.describe_consumer_groups([group])[group].result(timeout=30)
    return {m.client_id: {tp.partition for tp in m.assignment.topic_partitions
                          if tp.topic == topic} for m in description.members}


def wait_split(settings: Settings, group: str, topic: str, members: Mapping[str, Service],
               timeout: float = 120) -> dict[str, set[int]]:
    """The members' partitions once they hold them all; fails at once if one of them exited
    (an import error, say) instead of waiting out ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        dead = [member for member in members.values() if not member.running]
        if dead:
            raise RuntimeError("; ".join(f"{member.name} exited with {member.returncode}: "
                                         f"{member.tail()}" for member in dead))
        held = owners(settings, group, topic)
        if (set(held) == set(members) and all(held.values())
                and set().union(*held.values()) == set(range(settings.partitions))):
            return held
        if time.monotonic() > deadline:
            raise RuntimeError(f"{group} did not split {topic} between {set(members)}: {held}")
        time.sleep(0.25)


def split(records: list[tuple[int, int, int]], killed: set[int],
          kill_ms: int) -> tuple[list[float], list[float]]:
    """(lateness ms of the killed partitions' records due after the kill, of the survivor's due
    within SURVIVOR_WINDOW_MS of it) from (partition, due ms, fired ms) triples."""
    lost, kept = [], []
    for partition, due, fired in records:
        if due < kill_ms:
            continue
        if partition in killed:
            lost.append(float(fired - due))
        elif due <= kill_ms + SURVIVOR_WINDOW_MS:
            kept.append(float(fired - due))
    return lost, kept


def kill_later(service_pid: int, seconds: float, at: list[int]) -> threading.Timer:
    def kill() -> None:
        at.append(now_ms())
        signal_pid(service_pid)

    timer = threading.Timer(seconds, kill)
    timer.start()
    return timer


def signal_pid(pid: int) -> None:
    import os

    os.kill(pid, signal.SIGKILL)


def cfstream_failover(bootstrap: str, workdir: Path, keys: int, rate: float,
                      seconds: float, group_protocol: str = "classic") -> dict[str, Any]:
    settings = env.new_settings(bootstrap, "failover")
    ensure_topics(settings)
    producer = env.raw_producer(settings, overrides={"linger.ms": 20})
    scale.write_changelog(settings, producer, 0, keys)
    services = env.services(settings, workdir)
    reader = None
    client = Client(settings)
    try:
        replicas = {name: services.processor(name, CFSTREAM_KAFKA_CONFIG=json.dumps(
            {"client.id": name, "group.protocol": group_protocol}))
            for name in ("replica-a", "replica-b")}
        for replica in replicas.values():
            replica.wait_ready(300 + keys / 5_000)
        held = wait_split(settings, settings.processor_group, settings.calls_topic,
                          replicas)
        for replica in replicas.values():  # what moved in the split is restored again
            replica.wait_ready(300 + keys / 5_000)
        env.log(f"failover: {keys:,} pending keys; partitions {held}")
        reader = env.LatencyReader(settings, settings.executions_topic)
        total = int(rate * seconds)
        killed_at: list[int] = []
        timer = kill_later(replicas["replica-a"].pid, KILL_AFTER_S, killed_at)

        def send(i: int) -> None:
            client.publish(calls.call(i, task=calls.NOOP, delay_ms=DELAY_MS))

        env.paced(total, rate, send, "failover: submitting")
        timer.join()
        client.flush(30)
        found = reader.wait_count(total, 90, what="failover: executions fired")
        records = [(murmur2(e["id"].encode(), settings.partitions), e["due_ms"], ts)
                   for _, ts, e in reader.records]
    finally:
        if reader is not None:
            reader.close()
        client.close()
        services.close()
    lost, kept = split(records, held["replica-a"], killed_at[0])
    return {"keys": keys, "calls": total, "executions": found, "killed": sorted(held["replica-a"]),
            "takeover_s": max(lost) / 1000 if lost else None,
            "survivor_lateness_ms": env.summary(kept) if kept else None,
            "missing": total - len({e["id"] for _, _, e in reader.records})}


def raw_failover(settings: Settings, workdir: Path, rate: float,
                 seconds: float) -> dict[str, Any]:
    source = env.create_topic(settings, f"{settings.topic_prefix}.raw-failover-in")
    target = env.create_topic(settings, f"{settings.topic_prefix}.raw-failover-out")
    group = f"{settings.topic_prefix}.raw-failover"
    members = env.services(settings, workdir)
    for name in ("raw-a", "raw-b"):
        members.start(name, [settings.bootstrap_servers, source, target, group, name],
                      command=RAW_MEMBER)
    reader = env.LatencyReader(settings, target, decode=lambda v: tuple(map(int, v.split())))
    producer = env.raw_producer(settings, warm_topic=source)
    try:
        held = wait_split(settings, group, source, members.started)
        total = int(rate * seconds)
        killed_at: list[int] = []
        timer = kill_later(members.started["raw-a"].pid, KILL_AFTER_S, killed_at)

        def send(i: int) -> None:
            producer.produce(source, key=f"k{i}".encode(), value=b"")
            producer.poll(0)

        env.paced(total, rate, send, "failover raw: sending")
        timer.join()
        producer.flush(30)
        reader.wait_count(total, 90, what="failover raw: relayed")
        records = [(p, sent, ts) for _, ts, (sent, p) in reader.records]
    finally:
        reader.close()
        members.close()
    lost, kept = split(records, held["raw-a"], killed_at[0])
    return {"takeover_s": max(lost) / 1000 if lost else None,
            "survivor_lateness_ms": env.summary(kept) if kept else None}


def run(bootstrap: str, workdir: Path, quick: bool, profile: bool,
        shared: dict[str, Any]) -> env.Result:
    keys, rate, seconds = (20_000, 100.0, 20.0) if quick else (1_000_000, 200.0, 30.0)
    result = env.Result("failover")
    protocol = shared.get("group_protocol", "classic")
    ours = cfstream_failover(bootstrap, workdir, keys, rate, seconds, protocol)
    raw = raw_failover(env.new_settings(bootstrap, "rawfail"), workdir, rate, seconds)
    env.log(f"failover: cfstream {ours}, raw {raw}")
    n = f"{keys:,}"
    result.row(f"kill -9 one of two replicas ({n} pending keys): its partitions' due calls "
               "fire again within", ours["takeover_s"], raw["takeover_s"], "s",
               f"<= {TAKEOVER_TARGET_S:.0f} s", higher_is_better=False)
    ours_p99 = (ours["survivor_lateness_ms"] or {}).get("p99")
    raw_p99 = (raw["survivor_lateness_ms"] or {}).get("p99")
    result.row("same, the survivor's own partitions: fire lateness p99 through the rebalance",
               ours_p99, raw_p99, "ms", f"<= {SURVIVOR_P99_TARGET_MS:.0f} ms",
               higher_is_better=False)
    result.details.update(cfstream=ours, raw=raw, group_protocol=protocol)
    if ours["missing"]:
        result.notes.append(f"failover: {ours['missing']} calls never fired")
    return result
