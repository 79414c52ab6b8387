"""Processor replicas seen from outside, as an operator sees them: who holds which partitions
(the group), what each exports on /metrics, its CPU time, its standby copies, and the
partitions its log says it took over."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from bench import env
from cfstream.dev.services import Service, Services
from cfstream.kafka.config import admin_config
from cfstream.settings import Settings

# A copy this close to its changelog's end counts as caught up: a takeover replays it in ~0.1 s
# (the warm-up's acceptable lag, cfstream/processor/warmup.py).
CAUGHT_UP_RECORDS = 10_000
SAMPLE_INTERVAL = 1.0
# The line a replica logs for each partition it starts running (cfstream/processor/loop.py).
TAKEN_OVER = re.compile(r"\[(\d+)\]: running from offset \d+ \((\d+) changelog records restored, "
                        r"(from a standby|from its disk|cold)\)")
SOURCES = {"from a standby": "standby", "from its disk": "disk", "cold": "cold"}
# The line a replica logs when it starts a standby copy (cfstream/processor/standby.py).
COPY_STARTED = re.compile(r"\[(\d+)\]: standby copy from offset (\d+) \(the changelog ends at "
                          r"(\d+)\)")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def static_env(name: str, standby_replicas: int) -> dict[str, str]:
    """A static replica (its name its instance id and client id) keeping ``standby_replicas``
    copies a partition, started at once (no 30 s delay). The replicas of a benchmark all start
    together, so none warms up before joining (it would copy cold what the first rebalance hands
    out anyway)."""
    return {"CFSTREAM_INSTANCE_ID": name,
            "CFSTREAM_KAFKA_CONFIG": json.dumps({"client.id": name}),
            "CFSTREAM_STANDBY_REPLICAS": str(standby_replicas),
            "CFSTREAM_STANDBY_DELAY": "0", "CFSTREAM_WARMUP_TIMEOUT": "0"}


# -- the group --------------------------------------------------------------------------------------

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


# -- a replica's readings ---------------------------------------------------------------------------

def launch_split(settings: Settings, services: Services, members: Mapping[str, Mapping[str, str]],
                 ready_s: float) -> tuple[dict[str, Service], dict[str, set[int]]]:
    """Processor replicas named and configured by ``members`` (each's state in the services'
    workdir), once they split the calls topic and each is ready again after the split (what
    moved in it is restored again). Returns them and what each holds."""
    started = {name: services.processor(name, services.workdir / f"state-{name}", **extra)
               for name, extra in members.items()}
    for replica in started.values():
        replica.wait_ready(ready_s)
    held = wait_split(settings, settings.processor_group, settings.calls_topic, started)
    for replica in started.values():
        replica.wait_ready(ready_s)
    return started, held


def metrics(service: Service) -> dict[str, dict[str, float]]:
    """The replica's cfstream_* series: name -> {its label values joined by ",": value}; empty
    while it does not answer."""
    url = f"http://127.0.0.1:{service.http_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            text = response.read().decode()
    except OSError:
        return {}
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line.startswith("cfstream_"):
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        out.setdefault(name, {})[",".join(re.findall(r'="([^"]*)"', labels))] = float(value)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def cpu_by_thread(pid: int) -> dict[str, float]:
    """CPU seconds of process ``pid`` so far by kind of thread: its name with digits and what
    follows a colon dropped (librdkafka's ``rdk:broker3`` counts as ``rdk``, RocksDB's
    ``rocksdb:low2`` as ``rocksdb``, the Python threads by their names)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        kind = re.sub(r"[\d-]+$", "", name.split(":")[0]) or name
        out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def takeovers(log: str) -> list[dict[str, Any]]:
    """The partitions a replica's log says it started running: partition, changelog records
    restored, where its state came from (standby, disk or cold)."""
    return [{"partition": int(p), "records": int(n), "source": SOURCES[s]}
            for p, n, s in TAKEN_OVER.findall(log)]


def db_bytes(state_dir: Path, topic: str, partitions: Iterable[int]) -> int:
    """Bytes on disk of a replica's DBs of ``partitions`` (memtables not flushed yet are not
    there: the WAL is off; a stop flushes them)."""
    return sum(env.dir_bytes(state_dir / topic / f"{p}.db") for p in partitions)


def copies_started(log: str) -> list[dict[str, int]]:
    """The standby copies a replica's log says it started: partition, the offset it starts
    from, where the changelog ended (what it had to copy is the difference)."""
    return [{"partition": int(p), "from": int(start), "end": int(end)}
            for p, start, end in COPY_STARTED.findall(log)]


# -- standby copies ---------------------------------------------------------------------------------

def copied(replica: Service) -> set[int]:
    """The partitions the replica keeps a copy of, as its /metrics reports them."""
    return {int(p) for p in metrics(replica).get("cfstream_standby_lag_records", {})}


def copies(replicas: Iterable[Service]) -> tuple[int, list[float]]:
    """(copies the replicas keep in all, the lag each copy last reported)."""
    kept, lags = 0, list[float]()
    for replica in replicas:
        series = metrics(replica)
        kept += int(sum(series.get("cfstream_standby_partitions", {}).values()))
        lags += series.get("cfstream_standby_lag_records", {}).values()
    return kept, lags


def wait_copies(replicas: Mapping[str, Service], expected: int, timeout: float,
                max_lag: int = CAUGHT_UP_RECORDS) -> float:
    """Seconds until the replicas keep ``expected`` copies in all, each reported within
    ``max_lag`` records of its changelog's end; RuntimeError past ``timeout``."""
    started = time.monotonic()
    progress = env.Progress("waiting for the standby copies to catch up", expected, "copies")
    while True:
        dead = [r for r in replicas.values() if not r.running]
        if dead:
            raise RuntimeError(f"{dead[0].name} exited with {dead[0].returncode}: "
                               f"{dead[0].tail()}")
        kept, lags = copies(replicas.values())
        close_enough = sum(1 for lag in lags if lag <= max_lag)
        progress(close_enough)
        if kept == expected == len(lags) == close_enough:
            progress.finish()
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"standby copies not caught up within {timeout:.0f}s: {kept} kept "
                               f"of {expected}, lags {sorted(lags)}")
        time.sleep(1.0)


class LagSampler:
    """Samples the copies' lags on the replicas' /metrics every SAMPLE_INTERVAL, in a thread."""

    def __init__(self, replicas: Iterable[Service]) -> None:
        self.replicas = list(replicas)
        self.lags: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self.lags += copies(r for r in self.replicas if r.running)[1]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
