"""9. Waiting on outcomes after the fact (issue #17): ``Execution.result()``, ``status()`` and
``await`` on executions that all finished before the first wait.

No processor or worker runs: the bench writes the events itself, as they would (JSON keyed by
the execution id, murmur2_random, ``env.PARTITIONS`` partitions, docs/wire-format.md "Events
topic"). Two sets of N executions (UUIDv7 ids from ``new_execution_id(ms)``, submitted over
SPREAD_MS of id time): about 80 % ``scheduled, started, succeeded``, 10 % ``failed``, 10 % deferral
chains of 2..8 ids (each earlier id ``deferred`` to the next, the last one succeeds). The ids
waited on are the N first ids (a chain through its head). The "hour" set is written first, its
ids and record timestamps an hour old; the "now" set follows with ids of the last seconds.

Each scenario is a child of its own (``python -m bench.after ROLE ARGS``), a fresh process with a
fresh ``Client``, so its time and CPU are its own; each checks every outcome (the value, or
``ExecutionFailed`` with the error's type and message) and measures wall time from its first
wait to its last return. A child that runs past CAP_S stops itself and says how many waits had
finished (the bench kills it a little later if it cannot):

1. ``result()`` one after another in submit order; 2. shuffled (fixed seed); 3. reversed;
4. ``status()`` in submit order (succeeded / failed / deferred for chain heads; "unknown" counted);
5. ``asyncio.gather`` of N ``result_async()``; 6. ``result()`` in submit order on the hour set.

Raw baseline per set: a child with one ``Consumer`` assigned to every events partition from
``offsets_for_times(earliest submit - 10 s)``, reading to the high watermarks taken at its start
and orjson-decoding every record into a dict id -> latest event; median of RAW_ROUNDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from bench import env
from bench.profiling import Profiler, by_thread
from bench.waiting import stop
from cfstream.client import Client
from cfstream.clock import CLOCK_MARGIN_MS, now_ms
from cfstream.errors import ExecutionFailed
from cfstream.execution import Execution
from cfstream.ids import new_execution_id
from cfstream.kafka.config import consumer_config
from cfstream.kafka.retry import partitions
from cfstream.settings import Settings

TASK = "bench.after:job"
# quick -> (executions per set, seconds a scenario may take): 6 scenarios at their cap keep the
# quick run within about 6 minutes.
SIZES = {True: (2_000, 45.0), False: (10_000, 120.0)}
# The id time the N executions are submitted over.
SPREAD_MS = 4_000
HOUR_MS = 3_600_000
WAIT_TIMEOUT_S = 30.0
RAW_ROUNDS = 3
SEED = 17
# py-spy stalls the process it attaches to for a moment: not a wait's time.
PROFILER_ATTACH_S = 1.0
# After its cap a child reports what it has; past this much more the bench kills it.
KILL_GRACE_S = 10.0
# A child says how many waits have finished at most this often.
PROGRESS_EVERY_S = 0.25

# name, role, set, order, target at full size, at quick size
SCENARIOS: list[tuple[str, str, str, str, str, str]] = [
    ("result() in submit order", "result", "now", "submit",
     "<= 3 s, <= 2x raw", "<= 2x raw (full: <= 3 s)"),
    ("result() in shuffled order", "result", "now", "shuffled",
     "<= 3 s, <= 2x raw", "<= 2x raw (full: <= 3 s)"),
    ("result() in reversed order", "result", "now", "reversed", "", ""),
    ("status() in submit order", "status", "now", "submit",
     "<= 3 s, <= 2x raw", "<= 2x raw (full: <= 3 s)"),
    ("gather() of result_async()", "async", "now", "submit", "", ""),
    ("an hour earlier: result() in submit order", "result", "hour", "submit",
     "<= 2x raw", "<= 2x raw"),
]


# -- the executions -------------------------------------------------------------------------------

def build(base_ms: int, n: int, rng: random.Random) -> tuple[list[dict[str, Any]],
                                                             list[tuple[int, str, bytes]]]:
    """N executions submitted from ``base_ms`` over SPREAD_MS: the expected outcome of each (in
    submit order) and every event, as (timestamp ms, key, value), in time order."""
    expected: list[dict[str, Any]] = []
    records: list[tuple[int, str, bytes]] = []

    def emit(kind: str, execution_id: str, ts: int, defer_key: str | None,
             **more: Any) -> None:
        value = {"v": 1, "type": kind, "id": execution_id, "task": TASK, "defer_key": defer_key,
                 "ts_ms": ts, **more}
        records.append((ts, execution_id, orjson.dumps(value)))

    def run(execution_id: str, submit: int, defer_key: str | None,
            outcome: dict[str, Any]) -> None:
        """scheduled at submit, started a little later, then the outcome."""
        emit("scheduled", execution_id, submit + 1, defer_key, due_ms=submit, submitted_ms=submit)
        fired = submit + rng.randint(2, 20)
        emit("started", execution_id, fired + 1, defer_key, worker="bench-after:1",
             due_ms=submit, fired_ms=fired)
        end = fired + rng.randint(2, 50)
        if "error" in outcome:
            emit("failed", execution_id, end, defer_key, worker="bench-after:1",
                 error=outcome["error"])
        else:
            emit("succeeded", execution_id, end, defer_key, worker="bench-after:1",
                 result=outcome["result"])

    for i in range(n):
        submit = base_ms + i * SPREAD_MS // n
        head = new_execution_id(submit)
        draw = rng.random()
        if draw < 0.8:
            result = {"n": i, "ok": True}
            run(head, submit, None, {"result": result})
            expected.append({"id": head, "status": "succeeded", "result": result})
        elif draw < 0.9:
            error = {"type": "bench.after.Boom", "message": f"boom {i}",
                     "traceback": "Traceback (most recent call last):\n  File \"bench/after.py\","
                                  f" line 1, in job\nbench.after.Boom: boom {i}\n"}
            run(head, submit, None, {"error": error})
            expected.append({"id": head, "status": "failed", "error_type": error["type"],
                             "message": error["message"]})
        else:
            length = rng.randint(2, 8)
            key = f"key-{i}"
            times = [submit]
            for _ in range(length - 1):
                times.append(times[-1] + rng.randint(20, 200))
            ids = [head, *(new_execution_id(t) for t in times[1:])]
            for j in range(length - 1):
                emit("scheduled", ids[j], times[j] + 1, key, due_ms=times[j] + 1_000,
                     submitted_ms=times[j])
                emit("deferred", ids[j], times[j + 1] + 2, key, successor=ids[j + 1],
                     reason="replaced")
            result = {"n": i, "chain": length}
            run(ids[-1], times[-1], key, {"result": result})
            expected.append({"id": head, "status": "deferred", "result": result,
                             "chain": length})
    records.sort(key=lambda r: r[0])
    return expected, records


def write_events(producer: Producer, topic: str, records: list[tuple[int, str, bytes]],
                 stamped: bool) -> None:
    """``stamped``: each record's timestamp is its event's time, else the time produced."""
    progress = env.Progress("writing events", len(records))
    for i, (ts, key, value) in enumerate(records):
        while True:
            try:
                if stamped:
                    producer.produce(topic, key=key.encode(), value=value, timestamp=ts)
                else:
                    producer.produce(topic, key=key.encode(), value=value)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
        progress(i + 1)
    left = producer.flush(60)
    progress.finish()
    if left:
        raise RuntimeError(f"{left} events not delivered")


# -- the bench side -------------------------------------------------------------------------------

def run(bootstrap: str, workdir: Path, quick: bool, profile: bool,
        shared: dict[str, Any]) -> env.Result:
    n, cap = SIZES[quick]
    result = env.Result("after")
    settings = env.new_settings(bootstrap, "after")
    rng = random.Random(SEED)
    now = now_ms()
    # Every event of the "now" set is stamped before it is written (the chains end last).
    now_base = now - SPREAD_MS - 8 * 200 - 1_000
    sets: dict[str, dict[str, Any]] = {}
    producer = env.raw_producer(settings)
    for name, base, stamped in (("hour", now - HOUR_MS, True), ("now", now_base, False)):
        expected, records = build(base, n, rng)
        write_events(producer, settings.events_topic, records, stamped)
        path = workdir / f"{name}.json"
        path.write_text(json.dumps(expected))
        sets[name] = {"expected": str(path), "since_ms": base - CLOCK_MARGIN_MS,
                      "records": len(records), "ids": len({r[1] for r in records}),
                      "kinds": count_kinds(expected)}
        env.log(f"after: {name} set, {n:,} executions, {len(records):,} events "
                f"({sets[name]['kinds']})")
    for name, info in sets.items():
        rounds = [run_child(settings, "raw", {"expected": info["expected"],
                                              "since_ms": info["since_ms"]}, cap, n)
                  for _ in range(RAW_ROUNDS)]
        info["raw_rounds"] = rounds
        info["raw_s"] = statistics.median(r["seconds"] for r in rounds)
        wrong = sum(r["wrong"] for r in rounds)
        if wrong:
            result.notes.append(f"after: raw reader of the {name} set: {wrong} latest events "
                                "not as expected")
        env.log(f"after: raw reader of the {name} set: {info['raw_s']:.2f} s "
                f"({rounds[0]['records']:,} records)")
    figures: dict[str, Any] = {}
    for label, role, set_name, order, full_target, quick_target in SCENARIOS:
        profiler = None
        if profile and label == SCENARIOS[0][0]:
            profiler = Profiler(workdir / "after-result.pyspy.txt", idle=True)
        env.log(f"after: {label} ({set_name} set, cap {cap:.0f} s)")
        report = run_child(settings, role, {"expected": sets[set_name]["expected"],
                                            "order": order, "cap": cap}, cap, n, profiler)
        figures[label] = report
        raw_s = sets[set_name]["raw_s"]
        metric = f"{n:,} finished, {label}: total"
        if report["capped"]:
            metric += f" (CAPPED at {cap:.0f} s: {report['done']:,} of {n:,} done)"
        result.row(metric, report["seconds"], raw_s, "s",
                   quick_target if quick else full_target, higher_is_better=False)
        if label == SCENARIOS[0][0]:
            per_wait = report["seconds"] / max(report["done"], 1) * 1000
            result.row(f"{n:,} finished, {label}: mean per wait", per_wait, raw_s / n * 1000,
                       "ms", higher_is_better=False)
        env.log(f"after: {label}: {report['done']:,} of {n:,} in {report['seconds']:.1f} s"
                f"{' (capped)' if report['capped'] else ''}, {len(report['wrong'])} wrong")
    wrong = sum(r["wrong_count"] for r in figures.values())
    result.row("outcomes not as expected (all scenarios)", wrong, None, "count", "0",
               higher_is_better=False)
    status = figures["status() in submit order"]
    result.row("status(): unknown", status.get("unknown", 0), None, "count", "0",
               higher_is_better=False)
    for label, report in figures.items():
        done = max(report["done"], 1)
        result.notes.append(
            f"after: {label}: {report['done']:,} of {n:,} waits in {report['seconds']:.1f} s"
            f"{' (capped)' if report['capped'] else ''}, {report['seconds'] / done * 1000:,.1f} "
            f"ms per wait, first wait {report.get('first_ms', float('nan')):,.0f} ms, "
            f"CPU {report['cpu_s']:.1f} s, {report['wrong_count']} wrong"
            + (f" (e.g. {report['wrong'][0]})" if report["wrong"] else ""))
        profile_summary = report.pop("profile", None)
        if profile_summary is not None:
            result.details[f"profile of {label}"] = profile_summary
            for thread, summary in profile_summary.get("threads", {}).items():
                top = ", ".join(f"`{f}` {p}%" for f, p in summary["self_pct"][:5])
                result.notes.append(f"after: {label}, py-spy --idle, thread {thread} "
                                    f"({summary['share_pct']}% of samples), self time: {top}")
            if "error" in profile_summary:
                result.notes.append(f"after: no profile: {profile_summary['error']}")
    raw_figures = ", ".join(f"{k} set {v['raw_s']:.2f} s" for k, v in sets.items())
    result.notes.append(f"after: raw reader {raw_figures} (median of {RAW_ROUNDS}); the hour "
                        "set's reader reads both sets")
    result.details.update(n=n, cap_s=cap, partitions=settings.partitions, spread_ms=SPREAD_MS,
                          sets=sets, scenarios=figures)
    return result


def count_kinds(expected: list[dict[str, Any]]) -> dict[str, int]:
    kinds: dict[str, int] = defaultdict(int)
    for e in expected:
        kinds[e["status"]] += 1
    return dict(kinds)


def run_child(settings: Settings, role: str, args: dict[str, Any], cap: float, n: int,
              profiler: Profiler | None = None) -> dict[str, Any]:
    """Starts ``role``, lets it go once it is ready (and the profiler attached), logs its
    progress; its ``done`` report, or one made of its last progress if it had to be killed."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.after", role, json.dumps(args)],
                            **env.child(settings), text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    lines: list[str] = []
    got = threading.Condition()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with got:
                lines.append(line.strip())
                got.notify_all()
        with got:
            lines.append("eof")
            got.notify_all()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def next_line(deadline: float) -> str | None:
        with got:
            got.wait_for(lambda: bool(lines), max(deadline - time.monotonic(), 0))
            return lines.pop(0) if lines else None

    try:
        line = next_line(time.monotonic() + 60)
        if line != "ready":
            raise RuntimeError(f"after {role}: expected ready, got {line!r} (exit {proc.poll()})")
        if profiler is not None:
            profiler.start(proc.pid)
            time.sleep(PROFILER_ATTACH_S)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        started = time.monotonic()
        deadline = started + cap + KILL_GRACE_S
        progress = env.Progress(f"after {role} {args.get('order', '')}".rstrip(), n, "waits")
        done = 0
        while True:
            line = next_line(deadline)
            if line is None or line == "eof":
                seconds = time.monotonic() - started
                if line == "eof" and seconds < cap:
                    raise RuntimeError(f"after {role}: ended before it reported "
                                       f"(exit {proc.wait()})")
                # Killed past its cap before it reported: what it said last finished.
                progress.finish()
                return {"done": done, "seconds": min(seconds, cap), "capped": True,
                        "killed": True, "cpu_s": float("nan"), "wrong": [],
                        "wrong_count": 0, "exit": proc.poll(),
                        "profile": stop_profiler(profiler)}
            word, _, rest = line.partition(" ")
            if word == "progress":
                done = int(rest)
                progress(done)
            elif word == "done":
                progress.finish()
                report: dict[str, Any] = json.loads(rest)
                if profiler is not None:
                    report["profile"] = stop_profiler(profiler)
                return report
            else:
                raise RuntimeError(f"after {role}: unexpected line {line!r}")
    finally:
        stop(proc, profiler)
        reader.join(5)


def stop_profiler(profiler: Profiler | None) -> dict[str, Any] | None:
    if profiler is None:
        return None
    profiler.stop()
    if profiler.error is not None or not profiler.output.exists():
        return {"error": profiler.error or "not run"}
    return by_thread(profiler.output.read_text(errors="replace"))


# -- the children ---------------------------------------------------------------------------------

class Reporter:
    """The child's side: ``progress N`` lines, and one ``done`` report, from the waits' loop or
    from the watchdog that ends the child CAP seconds after ``go``."""

    def __init__(self, cap: float) -> None:
        self.lock = threading.Lock()
        self.cap = cap
        self.done = 0
        self.wrong: list[str] = []
        self.wrong_count = 0
        self.extra: dict[str, Any] = {}
        self.wait_ms: list[float] = []
        self.started = 0.0
        self.cpu0 = 0.0
        self.last_said = 0.0
        self.reported = False

    def say(self, text: str) -> None:
        with self.lock:
            if not self.reported:
                os.write(1, (text + "\n").encode())

    def ready_then_go(self) -> None:
        self.say("ready")
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("no go")
        timer = threading.Timer(self.cap, self.capped)
        timer.daemon = True
        timer.start()
        self.cpu0, self.started = time.process_time(), time.monotonic()

    def finished(self, problem: str | None, wait_ms: float | None = None) -> None:
        self.done += 1
        if wait_ms is not None:
            self.wait_ms.append(wait_ms)
        if problem is not None:
            self.wrong_count += 1
            if len(self.wrong) < 5:
                self.wrong.append(problem)
        now = time.monotonic()
        if now - self.last_said >= PROGRESS_EVERY_S:
            self.last_said = now
            self.say(f"progress {self.done}")

    def report(self, capped: bool) -> None:
        seconds = time.monotonic() - self.started
        body = {"done": self.done, "seconds": self.cap if capped else seconds, "capped": capped,
                "cpu_s": time.process_time() - self.cpu0, "wrong": list(self.wrong),
                "wrong_count": self.wrong_count, "wait_ms": env.summary(list(self.wait_ms)),
                "first_ms": self.wait_ms[0] if self.wait_ms else float("nan"), **self.extra}
        with self.lock:
            if self.reported:
                return
            self.reported = True
            os.write(1, ("done " + json.dumps(body) + "\n").encode())

    def capped(self) -> None:
        self.report(True)
        os._exit(0)


def check(expected: dict[str, Any], got: Any) -> str | None:
    """None if ``got`` (a value or the exception raised) is the expected outcome."""
    if expected["status"] == "failed":
        if (isinstance(got, ExecutionFailed) and got.error_type == expected["error_type"]
                and got.message == expected["message"]):
            return None
    elif not isinstance(got, BaseException) and got == expected["result"]:
        return None
    shown = f"{type(got).__name__}: {got}" if isinstance(got, BaseException) else repr(got)
    return f"{expected['id']} ({expected['status']}): got {shown[:200]}"


def ordered(expected: list[dict[str, Any]], order: str) -> list[dict[str, Any]]:
    if order == "shuffled":
        shuffled = list(expected)
        random.Random(SEED).shuffle(shuffled)
        return shuffled
    if order == "reversed":
        return expected[::-1]
    return list(expected)


def result_role(settings: Settings, expected: list[dict[str, Any]], cap: float) -> None:
    client = Client(settings)
    out = Reporter(cap)
    out.ready_then_go()
    for e in expected:
        t = time.monotonic()
        got: Any
        try:
            got = Execution(e["id"], client=client).result(timeout=WAIT_TIMEOUT_S)
        except Exception as exc:
            got = exc
        out.finished(check(e, got), (time.monotonic() - t) * 1000)
    out.report(False)
    client.close()


def status_role(settings: Settings, expected: list[dict[str, Any]], cap: float) -> None:
    client = Client(settings)
    out = Reporter(cap)
    out.extra["unknown"] = 0
    out.ready_then_go()
    for e in expected:
        t = time.monotonic()
        status = Execution(e["id"], client=client).status()
        if status == "unknown":
            out.extra["unknown"] += 1
        problem = None if status == e["status"] else f"{e['id']}: {status}, not {e['status']}"
        out.finished(problem, (time.monotonic() - t) * 1000)
    out.report(False)
    client.close()


def async_role(settings: Settings, expected: list[dict[str, Any]], cap: float) -> None:
    client = Client(settings)
    out = Reporter(cap)

    async def main() -> None:
        out.ready_then_go()
        started = time.monotonic()
        waits = [asyncio.ensure_future(
                    Execution(e["id"], client=client).result_async(timeout=WAIT_TIMEOUT_S))
                 for e in expected]
        for e, wait in zip(expected, waits, strict=True):
            wait.add_done_callback(resolved(e, started))
        results = await asyncio.gather(*waits, return_exceptions=True)
        out.extra["returned"] = len(results)

    def resolved(e: dict[str, Any], started: float) -> Callable[[asyncio.Future[Any]], None]:
        def done(future: asyncio.Future[Any]) -> None:
            got = future.exception() if future.exception() is not None else future.result()
            out.finished(check(e, got), (time.monotonic() - started) * 1000)
        return done

    asyncio.run(main())
    out.report(False)
    client.close()


def raw_role(settings: Settings, expected: list[dict[str, Any]], since_ms: int) -> None:
    """One Consumer of every partition from ``since_ms`` to the ends taken at its start."""
    out = Reporter(cap=600.0)
    out.ready_then_go()
    cpu0, started = time.process_time(), time.monotonic()
    topic = settings.events_topic
    consumer = Consumer(consumer_config(settings, None))
    parts = partitions(consumer, topic)
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in parts}
    starts = {tp.partition: tp.offset if tp.offset >= 0 else ends[tp.partition]
              for tp in consumer.offsets_for_times(
                  [TopicPartition(topic, p, since_ms) for p in parts], timeout=30)}
    consumer.assign([TopicPartition(topic, p, starts[p]) for p in parts])
    left = {p for p in parts if starts[p] < ends[p]}
    latest: dict[str, dict[str, Any]] = {}
    records = 0
    deadline = started + 300
    while left and time.monotonic() < deadline:
        for message in consumer.consume(1000, 0.1):
            if message.error() is not None:
                continue
            event = orjson.loads(message.value() or b"")
            latest[event["id"]] = event
            records += 1
            offset, p = message.offset(), message.partition()
            if offset is not None and p is not None and offset + 1 >= ends[p]:
                left.discard(p)
    seconds, cpu = time.monotonic() - started, time.process_time() - cpu0
    consumer.close()
    wrong = sum(1 for e in expected if latest.get(e["id"], {}).get("type") != e["status"])
    out.reported = True
    os.write(1, ("done " + json.dumps({"seconds": seconds, "cpu_s": cpu, "records": records,
                                       "ids": len(latest), "wrong": wrong,
                                       "complete": not left}) + "\n").encode())


def main(argv: list[str]) -> None:
    role, args = argv[0], json.loads(argv[1])
    settings = Settings()
    expected = json.loads(Path(args["expected"]).read_text())
    if role == "raw":
        raw_role(settings, expected, args["since_ms"])
        return
    expected = ordered(expected, args["order"])
    roles = {"result": result_role, "status": status_role, "async": async_role}
    if role not in roles:
        raise SystemExit(f"unknown role {role}")
    roles[role](settings, expected, args["cap"])


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main(sys.argv[1:])
