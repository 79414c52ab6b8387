"""7. Failover: one processor replica killed with SIGKILL while calls come due.

Replicas hold ``keys`` pending calls (due in an hour, written to the changelog as in the
pending benchmark) and split the partitions. Calls with a 1 s delay (distinct keys) are then
submitted at a steady rate; a few seconds in, one replica is killed (``kill -9``, not
restarted). From the executions topic:

- **takeover**: the latest any call of the killed replica's partitions, due after the kill,
  fired (execution record timestamp minus due time): how long those partitions went unserved;
- **survivors**: fire lateness of the calls of the survivors' own partitions due within 20 s of
  the kill, through the rebalance (p50 / p99);
- **sources**: where each partition the survivors took over got its state, from their logs
  (``running from offset N (M changelog records restored, from a standby | from its disk |
  cold)``); in the details also the survivors' lateness second by second after the kill, and
  the standby copies they started after it (from their logs: a copy started then competes with
  their own partitions).

Two modes:

- **two replicas** (dynamic members, the replica's defaults), 4 partitions: as measured since
  the first failover runs.
- **three replicas**, 24 partitions, once without standby copies (CFSTREAM_STANDBY_REPLICAS=0)
  and once with one copy a partition (1), on the same changelog: issue #19's warm-replica
  target. The replicas are static members (``CFSTREAM_INSTANCE_ID``), as Helm deploys them. A
  kill -9 moves partitions only when the session times out, static or not (a static member
  never leaves on close, a killed dynamic one cannot), so this choice does not change the
  takeover; it only makes the benchmark run what a deployment runs, and the raw baseline's
  members are static too. With copies, the kill waits until every partition has its copy within
  10k records of its changelog's end (``cfstream_standby_lag_records``). Copies keep their
  default 30 s delay (CFSTREAM_STANDBY_DELAY; --quick: none): once the survivors took over, each
  wants copies of the other's new partitions, which it has nothing of; with no delay those cold
  copies would run during the window measured, which a deployment's default keeps out of it.

Baseline, in the same run: as many raw confluent-kafka group members (``bench.raw_member``, the
same membership settings) relay a topic of as many partitions, produced at the same rate; one is
killed the same way. Its takeover is the group's own floor: the session timeout plus a
rebalance.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import murmur2

from bench import calls, env, replicas, scale
from cfstream.client import Client
from cfstream.clock import now_ms
from cfstream.settings import Settings

DELAY_MS = 1_000
KILL_AFTER_S = 6.0
SURVIVOR_WINDOW_MS = 20_000
TAKEOVER_TARGET_S = 15.0
SURVIVOR_P99_TARGET_MS = 100.0
RAW_MEMBER = (sys.executable, "-m", "bench.raw_member")
# The three-replica mode: issue #19's layout.
THREE_PARTITIONS = 24
THREE = ("a", "b", "c")


def split(records: list[tuple[int, int, int]], killed: set[int],
          kill_ms: int) -> tuple[list[float], list[float]]:
    """(lateness ms of the killed partitions' records due after the kill, of the survivors' due
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


def by_second(records: list[tuple[int, int, int]], killed: set[int],
              kill_ms: int) -> list[dict[str, float]]:
    """The survivors' lateness of the calls due in each second after the kill (SURVIVOR_WINDOW_MS
    of them): when in the takeover it grows."""
    seconds: dict[int, list[float]] = {}
    for partition, due, fired in records:
        if partition not in killed and kill_ms <= due < kill_ms + SURVIVOR_WINDOW_MS:
            seconds.setdefault((due - kill_ms) // 1000, []).append(float(fired - due))
    return [{"second": s, **env.summary(seconds[s])} for s in sorted(seconds)]


def kill_later(service_pid: int, seconds: float, at: list[int]) -> threading.Timer:
    def kill() -> None:
        at.append(now_ms())
        os.kill(service_pid, signal.SIGKILL)

    timer = threading.Timer(seconds, kill)
    timer.start()
    return timer


def kill_one(settings: Settings, workdir: Path, members: Mapping[str, dict[str, str]],
             keys: int, rate: float, seconds: float, standby_replicas: int = 0,
             what: str = "failover") -> dict[str, Any]:
    """Replicas named and configured by ``members`` (the first is killed) on the state already
    on the changelog of ``settings``; with ``standby_replicas``, the kill waits for the copies."""
    services = env.services(settings, workdir)
    reader = None
    client = Client(settings)
    names = list(members)
    try:
        started, held = replicas.launch_split(settings, services, members, 300 + keys / 5_000)
        copies_s = None
        if standby_replicas:
            copies_s = replicas.wait_copies(
                started, standby_replicas * settings.partitions, 300 + keys / 20_000)
        # Before the load, the DBs of what each replica owns and copies (without the data
        # still in memtables).
        disk = {name: replicas.db_bytes(workdir / f"state-{name}", settings.calls_topic,
                                        held[name] | replicas.copied(r))
                for name, r in started.items()}
        env.log(f"{what}: {keys:,} pending keys; partitions {held}"
                + (f"; copies caught up in {copies_s:.0f}s" if copies_s is not None else ""))
        reader = env.LatencyReader(settings, settings.executions_topic)
        total = int(rate * seconds)
        seen = {name: len(started[name].log()) for name in names[1:]}
        killed_at: list[int] = []
        timer = kill_later(started[names[0]].pid, KILL_AFTER_S, killed_at)

        def send(i: int) -> None:
            client.publish(calls.call(i, task=calls.NOOP, delay_ms=DELAY_MS))

        env.paced(total, rate, send, f"{what}: submitting")
        timer.join()
        client.flush(30)
        found = reader.wait_count(total, 90 + keys / 50_000, what=f"{what}: executions fired")
        records = [(murmur2(e["id"].encode(), settings.partitions), e["due_ms"], ts)
                   for _, ts, e in reader.records]
        logs = {name: started[name].log()[seen[name]:] for name in names[1:]}
        taken = {name: replicas.takeovers(log) for name, log in logs.items()}
        copying = {name: replicas.copies_started(log) for name, log in logs.items()}
    finally:
        if reader is not None:
            reader.close()
        client.close()
        services.close()
    lost, kept = split(records, held[names[0]], killed_at[0])
    sources = [t["source"] for ts in taken.values() for t in ts]
    return {"keys": keys, "calls": total, "executions": found, "killed": sorted(held[names[0]]),
            "partitions": {name: sorted(ps) for name, ps in held.items()},
            "standby_replicas": standby_replicas, "copies_caught_up_s": copies_s,
            "held_and_copied_bytes_live": disk,
            "takeover_s": max(lost) / 1000 if lost else None,
            "survivor_lateness_ms": env.summary(kept) if kept else None,
            "taken_over": taken, "copies_started": copying,
            "survivor_lateness_by_second": by_second(records, held[names[0]], killed_at[0]),
            "sources": {source: sources.count(source) for source in sorted(set(sources))},
            "missing": total - len({e["id"] for _, _, e in reader.records})}


def cfstream_failover(bootstrap: str, workdir: Path, keys: int, rate: float,
                      seconds: float, group_protocol: str = "classic") -> dict[str, Any]:
    """Two dynamic replicas, the replica's defaults otherwise."""
    settings = env.new_settings(bootstrap, "failover")
    producer = env.raw_producer(settings, overrides={"linger.ms": 20})
    scale.write_changelog(settings, producer, 0, keys)
    members = {name: {"CFSTREAM_KAFKA_CONFIG": json.dumps(
        {"client.id": name, "group.protocol": group_protocol})}
        for name in ("replica-a", "replica-b")}
    return kill_one(settings, workdir, members, keys, rate, seconds)


def three_replicas(bootstrap: str, workdir: Path, keys: int, rate: float, seconds: float,
                   standby_delay: float) -> dict[int, dict[str, Any]]:
    """Three static replicas, 24 partitions, without copies and with one, on one changelog:
    {standby replicas: outcome}."""
    settings = env.new_settings(bootstrap, "failover3", partitions=THREE_PARTITIONS)
    producer = env.raw_producer(settings, overrides={"linger.ms": 20})
    scale.write_changelog(settings, producer, 0, keys)
    out = {}
    for k in (0, 1):
        members = {f"k{k}-{x}": {**replicas.static_env(f"k{k}-{x}", k),
                                 "CFSTREAM_STANDBY_DELAY": str(standby_delay)} for x in THREE}
        run_dir = workdir / f"three-k{k}"
        run_dir.mkdir(exist_ok=True)
        out[k] = kill_one(settings, run_dir, members, keys, rate, seconds, k,
                          what=f"failover, 3 replicas, K={k}")
        env.log(f"failover, 3 replicas, K={k}: takeover {out[k]['takeover_s']} s, sources "
                f"{out[k]['sources']}, survivors {out[k]['survivor_lateness_ms']}")
    return out


def raw_failover(settings: Settings, workdir: Path, rate: float, seconds: float,
                 members: int = 2, static: bool = False) -> dict[str, Any]:
    source = env.create_topic(settings, f"{settings.topic_prefix}.raw-failover-in",
                              settings.partitions)
    target = env.create_topic(settings, f"{settings.topic_prefix}.raw-failover-out",
                              settings.partitions)
    group = f"{settings.topic_prefix}.raw-failover"
    started = env.services(settings, workdir)
    names = [f"raw-{x}" for x in "abcdefgh"[:members]]
    for name in names:
        started.start(name, [settings.bootstrap_servers, source, target, group, name,
                             *([name] if static else [])], command=RAW_MEMBER)
    reader = env.LatencyReader(settings, target, decode=lambda v: tuple(map(int, v.split())))
    producer = env.raw_producer(settings, warm_topic=source)
    try:
        held = replicas.wait_split(settings, group, source, started.started)
        total = int(rate * seconds)
        killed_at: list[int] = []
        timer = kill_later(started.started[names[0]].pid, KILL_AFTER_S, killed_at)

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
        started.close()
    lost, kept = split(records, held[names[0]], killed_at[0])
    return {"members": members, "static": static, "partitions": settings.partitions,
            "takeover_s": max(lost) / 1000 if lost else None,
            "survivor_lateness_ms": env.summary(kept) if kept else None}


def _p99(outcome: dict[str, Any]) -> float | None:
    return (outcome["survivor_lateness_ms"] or {}).get("p99")


def run(bootstrap: str, workdir: Path, quick: bool, profile: bool,
        shared: dict[str, Any]) -> env.Result:
    keys, rate, seconds = (20_000, 100.0, 12.0) if quick else (1_000_000, 200.0, 30.0)
    # The quick run starts copies at once: those the survivors start after the takeover hold
    # ~4k records each, nothing to keep out of the window measured.
    keys3, delay = (100_000, 0.0) if quick else (10_000_000, 30.0)
    result = env.Result("failover")
    protocol = shared.get("group_protocol", "classic")
    ours = cfstream_failover(bootstrap, workdir, keys, rate, seconds, protocol)
    raw = raw_failover(env.new_settings(bootstrap, "rawfail"), workdir, rate, seconds)
    env.log(f"failover: cfstream {ours}, raw {raw}")
    n = f"{keys:,}"
    result.row(f"kill -9 one of two replicas ({n} pending keys): its partitions' due calls "
               "fire again within", ours["takeover_s"], raw["takeover_s"], "s",
               f"<= {TAKEOVER_TARGET_S:.0f} s", higher_is_better=False)
    result.row("same, the survivor's own partitions: fire lateness p99 through the rebalance",
               _p99(ours), _p99(raw), "ms", f"<= {SURVIVOR_P99_TARGET_MS:.0f} ms",
               higher_is_better=False)
    three = three_replicas(bootstrap, workdir, keys3, rate, seconds, delay)
    (workdir / "raw3").mkdir(exist_ok=True)
    raw3 = raw_failover(env.new_settings(bootstrap, "rawfail3", partitions=THREE_PARTITIONS),
                        workdir / "raw3", rate, seconds, members=3, static=True)
    env.log(f"failover, 3 replicas: raw {raw3}")
    for k, outcome in three.items():
        copies = "no standby copies" if not k else f"{k} standby cop{'y' if k == 1 else 'ies'}"
        result.row(f"kill -9 one of three static replicas, 24 partitions, {keys3:,} pending "
                   f"keys, {copies}: its partitions' due calls fire again within",
                   outcome["takeover_s"], raw3["takeover_s"], "s", f"<= {TAKEOVER_TARGET_S:.0f} s",
                   higher_is_better=False)
        result.row("same, the survivors' own partitions: fire lateness p99", _p99(outcome),
                   _p99(raw3), "ms", f"<= {SURVIVOR_P99_TARGET_MS:.0f} ms",
                   higher_is_better=False)
        taken = [t for ts in outcome["taken_over"].values() for t in ts]
        result.row(f"same, partitions taken over cold, of {len(taken)} taken over",
                   outcome["sources"].get("cold", 0), None, "count", "0" if k else "",
                   higher_is_better=False)
        result.row("same, changelog records the survivors restored to take over",
                   sum(t["records"] for t in taken), None, "count", higher_is_better=False)
        disk = outcome["held_and_copied_bytes_live"]
        result.row("same, a replica's DBs of its partitions and copies before the kill "
                   "(memtables not counted)", sum(disk.values()) / len(disk) / 2**20, None,
                   "MiB", f"(1+K)/N = {1 + k}/3 of the state", higher_is_better=False)
    result.details.update(cfstream=ours, raw=raw, group_protocol=protocol,
                          three={str(k): v for k, v in three.items()}, raw3=raw3)
    for outcome in (ours, *three.values()):
        if outcome["missing"]:
            result.notes.append(f"failover ({len(outcome['partitions'])} replicas, K="
                                f"{outcome['standby_replicas']}): {outcome['missing']} calls "
                                "never fired")
    return result
