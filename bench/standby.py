"""10. Standby copies: what keeping a warm copy of a partition costs (CFSTREAM_STANDBY_REPLICAS).

**Cold copy**, in this process: ``keys`` pending calls are written to a changelog (as the
pending benchmark writes them, :func:`bench.scale.write_changelog`), then
:class:`cfstream.processor.standby.Standbys` copies every partition from nothing, the way a
replica's restore thread tails its copies (each record: a read of the slot it replaces, the due
index entry moved, the checkpoint in the same WriteBatch). Beside it the takeover path
(:class:`cfstream.processor.restore.Restorer` restoring the same partitions cold) and the
baseline: one raw consumer writing the same changelog into a RocksDB with the replica's options
(:func:`bench.scale.raw_restore`, the recovery benchmark's baseline). Records/s and CPU seconds
(``time.process_time()``: every thread of this process, librdkafka's too) per 1M records, each
from the start of its setup (DBs, consumer) to its last record written; the full run takes the
median of ROUNDS rounds, each running the three in turn.

**Steady cost under load**: two processor replicas (real processes, static members, copies
started at once) hold ``keys`` pending calls; calls with a DELAY_MS delay (distinct keys) come
in at ``rate``/s for ``seconds`` s and fire. Once with CFSTREAM_STANDBY_REPLICAS=0, once with
1 (each replica then copies the other's partitions), on topics of their own. Per replica: CPU
seconds (``/proc/<pid>/stat``) from the first call sent to the last fired, RSS at the end; on
disk after a stop (a stop flushes the memtables, which hold data the files do not have yet: the
WAL is off), the DBs of the partitions it owns and copies, and bytes per key they hold (the
pending keys, and a fired marker per call of the load); the copies' lag p99
(``cfstream_standby_lag_records`` sampled every second; the replica updates it every 5 s); the
owners' fire lateness (execution record timestamp minus due time). The K = 1 / K = 0 ratio is
the cost of a copy; the extra CPU per changelog record the copies applied is set beside the raw
baseline's CPU per record above.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench import calls, env, replicas, scale
from cfstream.client import Client
from cfstream.processor.db import Databases, close
from cfstream.processor.restore import Restored, Restorer
from cfstream.processor.standby import Standbys
from cfstream.settings import Settings

ROUNDS = 3
DELAY_MS = 2_000


# -- 1. a cold copy, in process -------------------------------------------------------------------

def _measured(fn: Any) -> tuple[float, float, Any]:
    cpu, wall = time.process_time(), time.monotonic()
    out = fn()
    return time.monotonic() - wall, time.process_time() - cpu, out


def copy_cold(settings: Settings, path: Path, ends: Mapping[int, int]) -> tuple[float, float]:
    """Wall and CPU seconds for Standbys to copy every partition from nothing to ``ends``."""
    databases = Databases(path, settings.calls_topic)
    standbys = Standbys(settings, databases)
    standbys.want(ends, warm=True)
    deadline = time.monotonic() + 900

    def run() -> None:
        standbys.reconcile(())
        progress = env.Progress("standby: a cold copy", sum(ends.values()))
        while any(c.position < ends[p] for p, c in standbys.copies.items()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the copy did not catch up: {standbys.lags}")
            standbys.tail(0.05)
            progress(sum(c.position for c in standbys.copies.values()))
        progress.finish()

    try:
        wall, cpu, _ = _measured(run)
    finally:
        standbys.close()
    return wall, cpu


def restore_cold(settings: Settings, path: Path, partitions: int) -> tuple[float, float]:
    """Wall and CPU seconds for a Restorer to restore every partition from nothing."""
    databases = Databases(path, settings.calls_topic)
    restorer = Restorer(settings, databases, lambda _p, _left: None)
    restored: list[Restored] = []

    def run() -> None:
        for partition in range(partitions):
            restorer.restore(partition)
        while len(restored) < partitions:
            result = restorer.results.get(timeout=900)
            if isinstance(result, Restored):
                if result.db is None:
                    raise RuntimeError(f"the restore of partition {result.partition} failed")
                restored.append(result)

    try:
        wall, cpu, _ = _measured(run)
    finally:
        restorer.close()
        for result in restored:
            if result.db is not None:
                close(result.db)
    return wall, cpu


def cold_copies(bootstrap: str, workdir: Path, keys: int, rounds: int) -> dict[str, Any]:
    settings = env.new_settings(bootstrap, "standby-copy")
    producer = env.raw_producer(settings, overrides={"linger.ms": 20})
    scale.write_changelog(settings, producer, 0, keys)
    ends = env.end_offsets(settings, settings.changelog_topic)
    records = sum(ends.values())
    runs: dict[str, list[tuple[float, float]]] = {"copy": [], "restore": [], "raw": []}
    for r in range(rounds):
        round_dir = workdir / f"copy-round-{r}"
        runs["raw"].append(_measured(lambda: scale.raw_restore(settings, round_dir, records))[:2])  # noqa: B023
        runs["copy"].append(copy_cold(settings, round_dir / "copy", ends))
        runs["restore"].append(restore_cold(settings, round_dir / "restore", len(ends)))
        env.log("standby: round {}: {}".format(r + 1, ", ".join(
            f"{name} {runs[name][-1][0]:.1f}s wall {runs[name][-1][1]:.1f}s CPU"
            for name in runs)))
        shutil.rmtree(round_dir, ignore_errors=True)
    out: dict[str, Any] = {"keys": keys, "records": records, "rounds": rounds}
    for name, measured in runs.items():
        wall = statistics.median(w for w, _ in measured)
        cpu = statistics.median(c for _, c in measured)
        out[name] = {"wall_s": [w for w, _ in measured], "cpu_s": [c for _, c in measured],
                     "records_per_s": records / wall, "cpu_s_per_1m": cpu / records * 1e6}
    return out


# -- 2. steady cost under load --------------------------------------------------------------------

def under_load(bootstrap: str, workdir: Path, standby_replicas: int, keys: int, rate: float,
               seconds: float) -> dict[str, Any]:
    """Two replicas with ``standby_replicas`` copies a partition, under ``rate`` calls/s."""
    k = standby_replicas
    settings = env.new_settings(bootstrap, f"standby-k{k}")
    producer = env.raw_producer(settings, overrides={"linger.ms": 20})
    scale.write_changelog(settings, producer, 0, keys)
    run_dir = workdir / f"k{k}"
    run_dir.mkdir(exist_ok=True)
    services = env.services(settings, run_dir)
    client = Client(settings)
    reader = sampler = None
    names = (f"k{k}-a", f"k{k}-b")
    # Stopped, a replica stays in the group (no leave), so nothing moves while the state dirs
    # are read.
    try:
        members, held = replicas.launch_split(
            settings, services,
            {name: {**replicas.static_env(name, k), "CFSTREAM_LEAVE_ON_STOP": "false"}
             for name in names}, 300 + keys / 5_000)
        # Caught up to the last record, so the CPU measured is the load's alone.
        caught_up_s = (replicas.wait_copies(members, k * settings.partitions, 300 + keys / 5_000,
                                            max_lag=0) if k else 0.0)
        env.log(f"standby: K={k}, {keys:,} pending keys, partitions {held}, copies caught up "
                f"in {caught_up_s:.1f}s")
        reader = env.LatencyReader(settings, settings.executions_topic)
        sampler = replicas.LagSampler(members.values())
        pending = env.end_offsets(settings, settings.changelog_topic)  # one record a key
        cpu_before = {name: replicas.cpu_seconds(r.pid) for name, r in members.items()}
        started = time.monotonic()
        total = int(rate * seconds)

        def send(i: int) -> None:
            client.publish(calls.call(i, task=calls.NOOP, delay_ms=DELAY_MS))

        sent_s = env.paced(total, rate, send, f"standby: K={k}, submitting")
        client.flush(30)
        found = reader.wait_count(total, 60 + seconds, what=f"standby: K={k}, fired")
        window = time.monotonic() - started
        cpu = {name: replicas.cpu_seconds(r.pid) - cpu_before[name] for name, r in members.items()}
        rss = {name: r.rss_kib() for name, r in members.items()}
        changelog_records = (sum(env.end_offsets(settings, settings.changelog_topic).values())
                             - sum(pending.values()))
        # What each replica holds: its partitions and its copies (a DB of a partition it ran
        # before the split stays on its disk, and is counted apart).
        kept = {name: held[name] | replicas.copied(r) for name, r in members.items()}
        sampler.close()
        lateness = [float(ts - e["due_ms"]) for _, ts, e in reader.records]
        for name in names:  # a stop flushes the memtables
            services.stop(name)
        disk = {name: env.dir_bytes(run_dir / f"state-{name}") for name in names}
        kept_disk = {name: replicas.db_bytes(run_dir / f"state-{name}", settings.calls_topic,
                                             kept[name]) for name in names}
        # Keys a replica holds: the pending ones of its partitions and copies, and a fired
        # marker for each call of the load (spread evenly, as the ids are random).
        kept_keys = {name: sum(pending[p] for p in kept[name])
                     + total * len(kept[name]) / settings.partitions for name in names}
    finally:
        if sampler is not None:
            sampler.close()
        if reader is not None:
            reader.close()
        client.close()
        services.close()
    return {"standby_replicas": k, "keys": keys, "rate": rate, "seconds": seconds,
            "calls": total, "executions": found, "sent_s": sent_s, "window_s": window,
            "copies_caught_up_s": caught_up_s, "partitions": {n: sorted(p) for n, p in held.items()},
            "cpu_s": cpu, "rss_kib": rss, "state_dir_bytes": disk,
            "held_and_copied": {n: sorted(p) for n, p in kept.items()},
            "held_and_copied_bytes": kept_disk, "held_and_copied_keys": kept_keys,
            "bytes_per_key": sum(kept_disk.values()) / sum(kept_keys.values()),
            "changelog_records": changelog_records,
            "standby_lag": env.summary(sampler.lags) if sampler.lags else None,
            "lateness_ms": env.summary(lateness)}


# -- the benchmark --------------------------------------------------------------------------------

def run(bootstrap: str, workdir: Path, quick: bool, profile: bool,
        shared: dict[str, Any]) -> env.Result:
    copy_keys, rounds = (50_000, 1) if quick else (1_000_000, ROUNDS)
    keys, rate, seconds = (20_000, 1_000.0, 15.0) if quick else (1_000_000, 3_000.0, 60.0)
    result = env.Result("standby")
    cold = cold_copies(bootstrap, workdir, copy_keys, rounds)
    n = f"{cold['records']:,}"
    result.row(f"cold copy of {n} changelog records (4 partitions), in process: records/s",
               cold["copy"]["records_per_s"], cold["raw"]["records_per_s"], "calls/s")
    result.row("same: CPU seconds per 1M changelog records", cold["copy"]["cpu_s_per_1m"],
               cold["raw"]["cpu_s_per_1m"], "s", higher_is_better=False)
    result.row(f"cold restore of the same {n} records (Restorer, the takeover path): records/s",
               cold["restore"]["records_per_s"], cold["raw"]["records_per_s"], "calls/s")
    result.row("same: CPU seconds per 1M changelog records", cold["restore"]["cpu_s_per_1m"],
               cold["raw"]["cpu_s_per_1m"], "s", higher_is_better=False)
    runs = {k: under_load(bootstrap, workdir, k, keys, rate, seconds) for k in (0, 1)}
    k0, k1 = runs[0], runs[1]
    load = f"2 replicas, {keys:,} pending keys, {rate:,.0f} calls/s for {seconds:.0f} s"
    result.row(f"{load}: CPU seconds a replica, K=1 (raw: K=0)", _mean(k1["cpu_s"]),
               _mean(k0["cpu_s"]), "s", higher_is_better=False)
    result.row("same: RSS a replica at the end, K=1 (raw: K=0)", _mean(k1["rss_kib"]) / 1024,
               _mean(k0["rss_kib"]) / 1024, "MiB", higher_is_better=False)
    result.row("same: disk a replica after a stop, the DBs of its partitions and copies, K=1 "
               "(raw: K=0)", _mean(k1["held_and_copied_bytes"]) / 2**20,
               _mean(k0["held_and_copied_bytes"]) / 2**20, "MiB", "(1+K)/N of the state: 2x",
               higher_is_better=False)
    result.row("same: owners' fire lateness p99, K=1 (raw: K=0)", k1["lateness_ms"]["p99"],
               k0["lateness_ms"]["p99"], "ms", higher_is_better=False)
    lag = k1["standby_lag"] or {}
    result.row("same: standby lag p99 (sampled each second), K=1", lag.get("p99"), None,
               "records", higher_is_better=False)
    extra_cpu = sum(k1["cpu_s"].values()) - sum(k0["cpu_s"].values())
    # With two replicas and one copy each, every changelog record of the load is applied once
    # by a copy.
    per_1m = extra_cpu / k1["changelog_records"] * 1e6 if k1["changelog_records"] else None
    result.row("same: extra CPU seconds per 1M changelog records a copy applied (raw: the raw "
               "consumer into RocksDB, above)", per_1m, cold["raw"]["cpu_s_per_1m"], "s",
               higher_is_better=False)
    result.row("same: bytes on disk per key held (pending + fired), K=1 (raw: K=0)",
               k1["bytes_per_key"], k0["bytes_per_key"], "B", higher_is_better=False)
    result.details.update(cold=cold, steady=runs)
    for data in runs.values():
        if data["executions"] < data["calls"]:
            result.notes.append(f"standby: K={data['standby_replicas']}: "
                                f"{data['calls'] - data['executions']} calls never fired")
    return result


def _mean(values: Mapping[str, float | int | None]) -> float:
    return statistics.fmean(v for v in values.values() if v is not None)
