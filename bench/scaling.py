"""Replicas on one machine: calls/s of 1 and of 2 processor replicas sharing a calls topic.

Each run fills a calls topic of its own with the same ``n`` calls (over ``n/2`` defer keys, due
in an hour, as benchmark 1) and starts the replicas together. The clock starts once the group
has settled (every replica's /readyz says 200: it owns its share, and the group is balanced),
so the rate is the steady one of N members, not that of a group still forming; it stops when
the group's committed offsets reach the end. While it runs, the box's CPU is read from /proc:
each replica's, and the whole machine's, so a shortfall shows where the two cores went (the
broker's JVM and this harness run here too).

Baseline, in the same run: one and two raw confluent-kafka group members (``python -m
bench.relay``) consuming the same kind of topic, decoding each record's JSON and producing it
to another topic, timed the same way from when each member holds partitions.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import calls, env
from bench.profiling import Profiler, short_frame, summarize
from bench.replicas import CLOCK_TICKS, cpu_by_thread, cpu_seconds
from cfstream.client import Client
from cfstream.dev.services import Service
from cfstream.settings import Settings

TARGET_SPEEDUP = 1.6


def box_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, over all cores."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / CLOCK_TICKS, sum(fields) / CLOCK_TICKS


def filled(bootstrap: str, name: str, total: int) -> Settings:
    settings = env.new_settings(bootstrap, name)
    client = Client(settings)
    calls.publish(client, calls.colliding(total),
                  env.Progress(f"scaling: filling {settings.calls_topic}", total, "calls"))
    client.close()
    return settings


@dataclass
class Mark:
    """Where a timed run stood at one moment: records done, CPU of each process and thread."""

    at: float
    done: int
    cpu: dict[int, float]
    threads: dict[int, dict[str, float]]
    box: tuple[float, float]


def mark(done: int, pids: Sequence[int]) -> Mark:
    return Mark(time.monotonic(), done, {pid: cpu_seconds(pid) for pid in pids},
                {pid: cpu_by_thread(pid) for pid in pids}, box_busy())


def timed(what: str, end: int, progress: Callable[[], int], pids: Callable[[], Sequence[int]],
          alive: Callable[[], None], settled: Callable[[], bool],
          timeout: float) -> dict[str, Any]:
    """Poll ``progress`` until it reaches ``end``; calls/s from the first look at which
    ``settled()`` holds, and the CPU the processes ``pids`` and the whole box spent since. A run
    too short to settle first (the quick one) is timed from its first movement instead, and
    says so (``timed_from``)."""
    bar = env.Progress(what, end, "records")
    began = mark(0, pids())
    moved: Mark | None = None
    steady: Mark | None = None
    deadline = time.monotonic() + timeout
    done = 0
    while done < end:
        alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: stuck at {done} of {end}")
        done = progress()
        if moved is None and done > 0:
            moved = began if done >= end else mark(done, pids())
        if steady is None and settled():
            steady = mark(done, pids())
        bar(done)
        time.sleep(0.05)
    last = mark(done, pids())
    bar.finish()
    start, timed_from = (steady, "settled") if steady and steady.done <= end * 0.8 else (
        moved or began, "first movement")
    seconds = last.at - start.at
    threads: dict[str, float] = {}
    for pid, kinds in last.threads.items():
        for kind, cpu in kinds.items():
            threads[kind] = threads.get(kind, 0.0) + cpu - start.threads.get(pid, {}).get(kind, 0)
    return {"per_s": (end - start.done) / seconds, "seconds": seconds, "timed_from": timed_from,
            "before_timed": start.done, "timed_records": end - start.done,
            "process_cpu_s": [last.cpu[pid] - start.cpu.get(pid, 0.0) for pid in last.cpu],
            "cores_by_thread": {k: round(v / seconds, 3) for k, v in sorted(threads.items())},
            "box_busy_cores": (last.box[0] - start.box[0]) / seconds,
            "box_cores": (last.box[1] - start.box[1]) / seconds}


def cfstream_rate(bootstrap: str, workdir: Path, replicas: int, total: int,
                  profile: bool = False) -> dict[str, Any]:
    """``profile``: py-spy each replica from its start to the end of the run (its samples per
    call, and where they are spent: see :func:`profiles`)."""
    settings = filled(bootstrap, f"scaling{replicas}", total)
    ends = env.end_offsets(settings, settings.calls_topic)
    group = env.GroupOffsets(settings, settings.processor_group, settings.calls_topic, list(ends))
    (workdir := workdir / f"cfstream-{replicas}").mkdir(parents=True, exist_ok=True)
    services = env.services(settings, workdir)
    try:
        started: list[Service] = [services.processor(f"replica-{i}", CFSTREAM_INSTANCE_ID=f"r{i}")
                                  for i in range(replicas)]
        profilers = [Profiler(workdir / f"{s.name}.pyspy.txt") for s in started] if profile else []
        for profiler, service in zip(profilers, started, strict=False):
            profiler.start(service.pid)

        def alive() -> None:
            for service in started:
                if not service.running:
                    raise RuntimeError(f"{service.name} exited: {service.tail()}")

        try:
            measured = timed(f"scaling: {replicas} processor(s)", sum(ends.values()),
                             group.total, lambda: [s.pid for s in started], alive,
                             lambda: all(s.readyz() == 200 for s in started),
                             timeout=120 + total / 200)
        finally:
            for profiler in profilers:
                profiler.stop()
        if profilers:
            measured["profile"] = profiles(profilers, total)
        return measured
    finally:
        services.close()


def raw_rate(bootstrap: str, members: int, total: int) -> dict[str, Any]:
    settings = filled(bootstrap, f"relay{members}", total)
    target = env.create_topic(settings, f"{settings.topic_prefix}.relayed")
    group = f"{settings.topic_prefix}.relay"
    children = [subprocess.Popen(  # noqa: S603 - our own module
        [sys.executable, "-m", "bench.relay", bootstrap, settings.calls_topic, target, group],
        **env.child(settings), stdout=subprocess.PIPE, text=True)
        for _ in range(members)]
    held = [0] * members  # partitions each member says it holds

    def listen(i: int, child: subprocess.Popen[str]) -> None:
        assert child.stdout is not None  # noqa: S101 - piped above
        for line in child.stdout:
            if line.startswith("holds "):
                held[i] = int(line.split()[1])

    for i, child in enumerate(children):
        threading.Thread(target=listen, args=(i, child), daemon=True).start()
    try:
        def alive() -> None:
            for child in children:
                if child.poll() is not None:
                    raise RuntimeError(f"relay exited with {child.returncode}")

        return timed(f"scaling: {members} raw relay(s)", total,
                     lambda: sum(env.end_offsets(settings, target).values()),
                     lambda: [c.pid for c in children], alive,
                     lambda: all(held) and sum(held) == settings.partitions,
                     timeout=120 + total / 200)
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(30)


TURN = "Processor.turn (cfstream/processor/loop.py)"


def profiles(profilers: list[Profiler], calls: int) -> dict[str, Any]:
    """The replicas' samples together: per call (at the profiler's rate, 10 ms a sample), and
    per callee of the loop's turn (its own share: the polls, produce and other calls into C)."""
    collapsed = "\n".join(p.output.read_text(errors="replace") for p in profilers
                           if p.output.exists())
    summary = summarize(collapsed, top=12)
    if "error" in summary:
        return summary
    parts: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [short_frame(f) for f in stack.split(";")]
        if TURN not in frames:
            parts["outside the turns (other threads)"] += int(count)
            continue
        below = frames[frames.index(TURN) + 1:]
        parts[below[0] if below else "the turn itself (polls, produce: C calls)"] += int(count)
    sample_us = 1e6 / profilers[0].rate
    return {**summary, "us_per_call": summary["samples"] * sample_us / calls,
            "turn_us_per_call": {k: round(n * sample_us / calls, 2)
                                 for k, n in parts.most_common(12)}}


def run(bootstrap: str, workdir: Path, quick: bool, profile: bool,
        shared: dict[str, Any]) -> env.Result:
    total = 10_000 if quick else 1_000_000
    result = env.Result("scaling")
    runs = {}
    for n in (1, 2):
        runs[f"raw_{n}"] = raw_rate(bootstrap, n, total)
        runs[f"cfstream_{n}"] = cfstream_rate(bootstrap, workdir, n, total, profile)
        env.log(f"scaling: {n} -> cfstream {runs[f'cfstream_{n}']['per_s']:,.0f}/s, "
                f"raw {runs[f'raw_{n}']['per_s']:,.0f}/s")
    ours = runs["cfstream_2"]["per_s"] / runs["cfstream_1"]["per_s"]
    raw = runs["raw_2"]["per_s"] / runs["raw_1"]["per_s"]
    result.row("calls/s, 2 replicas over 1", ours, raw, "x", f">= {TARGET_SPEEDUP}x")
    for n in (1, 2):
        result.row(f"calls/s, {n} replica(s)", runs[f"cfstream_{n}"]["per_s"],
                   runs[f"raw_{n}"]["per_s"], "calls/s", "")
        result.row(f"busy cores of {runs[f'cfstream_{n}']['box_cores']:.1f}, {n} replica(s)",
                   runs[f"cfstream_{n}"]["box_busy_cores"], runs[f"raw_{n}"]["box_busy_cores"],
                   "cores", "")
    for n in (1, 2):
        ours_run, raw_run = runs[f"cfstream_{n}"], runs[f"raw_{n}"]
        result.row(f"CPU per call of the replicas (relays), {n} replica(s)",
                   cpu_per_record(ours_run), cpu_per_record(raw_run), "us",
                   higher_is_better=False)
    result.details.update(runs, calls=total, target_met=ours >= TARGET_SPEEDUP)
    for n in (1, 2):
        run_ = runs[f"cfstream_{n}"]
        threads = ", ".join(f"{kind} {cores:.2f}" for kind, cores in
                            sorted(run_["cores_by_thread"].items(), key=lambda kv: -kv[1])
                            if cores >= 0.01)
        result.notes.append(f"{n} replica(s), timed from the {run_['timed_from']}: the box "
                            f"{run_['box_busy_cores']:.2f} cores busy, "
                            f"the replicas' threads (cores): {threads}; the rest is the broker "
                            "and this harness")
        prof = run_.get("profile")
        if prof and "error" not in prof:
            parts = ", ".join(f"{k} {v}" for k, v in prof["turn_us_per_call"].items())
            result.notes.append(f"{n} replica(s), py-spy from start to end: "
                                f"{prof['us_per_call']:.1f} us of samples a call; by callee "
                                f"of the loop's turn (us a call): {parts}")
    if ours < TARGET_SPEEDUP:
        result.notes.append(f"2 replicas reach {ours:.2f}x of one (raw relays {raw:.2f}x)")
    return result


def cpu_per_record(run_: dict[str, Any]) -> float:
    """The timed processes' CPU microseconds per record they handled while timed."""
    return sum(run_["process_cpu_s"]) / run_["timed_records"] * 1e6
