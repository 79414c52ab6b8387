"""8. Waiting on outcomes (issue #10): ``Execution.result()`` and ``await`` while unrelated events
flow, and 10,000 awaits in one process.

The bench writes the events itself, as the worker would (``succeeded`` JSON keyed by the
execution id, murmur2_random): no processor or worker runs, so the rates are exact. Each role
below is a subprocess of its own (``python -m bench.waiting ROLE ARGS``), so its CPU time is
its own:

- ``load``: unrelated ``succeeded`` events of fresh UUIDv7 ids at LOAD_RATE/s onto the events
  topic (``env.PARTITIONS`` partitions) for the whole one-waiter measurement.
- ``waiter``: a Client; each round a fresh id, ``Execution(id).result()``. The bench appends the
  id's ``succeeded`` event GAP_S after the waiter says it waits (a task's run time: the reader
  assigns the partition meanwhile). ``raw-waiter``: the baseline, one plain Consumer assigned to
  the id's partition only, from its end, reading until the id's record and decoding it.
- ``many``: asyncio, N fresh ids, ``asyncio.gather`` of N ``result_async()``; the bench appends
  their events at MANY_RATE/s (no other traffic, a topic of its own). ``raw-many``: the baseline,
  one Consumer of every partition in a thread resolving a dict of asyncio futures (key -> future,
  value decoded by orjson).

Latency = the time ``result()`` (or the await) returns minus the time the bench called
``produce()`` for the event (linger 0; the record's CreateTime is that time, same host clock).
CPU = the child's ``time.process_time()`` (every thread, librdkafka's too) over the measured
rounds, divided by their wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import orjson
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from bench import env
from bench.profiling import Profiler
from cfstream.client import Client
from cfstream.clock import now_ms
from cfstream.dev.procs import proc_status_kib
from cfstream.execution import Execution
from cfstream.ids import new_execution_id
from cfstream.kafka.config import consumer_config, producer_config
from cfstream.kafka.partitioner import partition_for
from cfstream.settings import Settings

# Issue #10's figures: unrelated traffic while one waiter waits, and the arrival rate of the
# 10,000 awaited outcomes.
LOAD_RATE = 20_000
MANY_RATE = 5_000
# Between "waiting" and the append: long enough for the reader to assign the id's partition, as
# a short task's run time would be.
GAP_S = 0.05
# Unrelated traffic before the first round, so the waiter reads a topic with a history.
LOAD_LEAD_S = 3.0
# Rounds before the measured ones: the reader's first assignments read back from submit time.
WARM_ROUNDS = 8
WAIT_TIMEOUT_S = 30.0
# py-spy stalls the process it attaches to for a moment: not a latency of the waiter's.
PROFILER_ATTACH_S = 1.0


def event(execution_id: str) -> bytes:
    return orjson.dumps({"v": 1, "type": "succeeded", "id": execution_id, "task": "bench.wait",
                         "ts_ms": now_ms(), "result": 1})


# -- the bench side -------------------------------------------------------------------------------

def run(bootstrap: str, workdir: Path, quick: bool, profile: bool,
        shared: dict[str, Any]) -> env.Result:
    rounds, seconds, many = (60, 8.0, 2_000) if quick else (300, 30.0, 10_000)
    result = env.Result("waiting")
    settings = env.new_settings(bootstrap, "waiting")
    one = one_waiter(settings, workdir, rounds, seconds, profile)
    many_settings = env.new_settings(bootstrap, "waiting-many")
    ours_many = many_awaits(many_settings, "many", many, workdir,
                            Profiler(workdir / "many.pyspy.txt") if profile else None)
    raw_many = many_awaits(many_settings, "raw-many", many, workdir)
    ours, raw = one["cfstream"], one["raw"]
    load = f"{LOAD_RATE // 1000}k/s unrelated"
    result.row(f"one waiter on ids of every partition, {load}: CPU", ours["cpu_pct"],
               raw["cpu_pct"], "%", higher_is_better=False)
    one_p, raw_one_p = one["cfstream_one"], one["raw_one"]
    result.row(f"one waiter on ids of one partition, {load}: CPU", one_p["cpu_pct"],
               raw_one_p["cpu_pct"], "%", "<= 5% of a core", higher_is_better=False)
    result.row(f"one waiter on ids of one partition, {load}: appended -> result() p99",
               one_p["latency_ms"]["p99"], raw_one_p["latency_ms"]["p99"], "ms",
               "<= 20 ms, <= 2x raw", higher_is_better=False)
    every = one["raw_every_partition"]
    result.row(f"one waiter on ids of every partition, {load}: CPU beside a raw reader of all {settings.partitions} "
               "partitions", ours["cpu_pct"], every["cpu_pct"], "%", higher_is_better=False)
    for q, target in (("p50", "<= 5 ms, <= 2x raw"), ("p99", "<= 20 ms, <= 2x raw")):
        result.row(f"one waiter on ids of every partition, {load}: appended -> result() {q}", ours["latency_ms"][q],
                   raw["latency_ms"][q], "ms", target, higher_is_better=False)
    label = f"{many:,} awaits @ {MANY_RATE // 1000}k/s"
    result.row(f"{label}: resolved", ours_many["resolved"], raw_many["resolved"], "count",
               f"all {many:,}")
    for q, target in (("p50", ""), ("p99", "<= 50 ms")):
        result.row(f"{label}: appended -> resolved {q}", ours_many["latency_ms"][q],
                   raw_many["latency_ms"][q], "ms", target, higher_is_better=False)
    result.row(f"{label}: RSS growth", ours_many["rss_growth_mib"], raw_many["rss_growth_mib"],
               "MiB", "<= 200 MiB", higher_is_better=False)
    profiles = {"one waiter": one["cfstream"].pop("profile", None),
                f"{many:,} awaits": ours_many.pop("profile", None)}
    result.details.update(partitions=settings.partitions, load_rate=LOAD_RATE, gap_s=GAP_S,
                          rounds=rounds, round_seconds=seconds, warm_rounds=WARM_ROUNDS,
                          one_waiter=one,
                          many_rate=MANY_RATE, many=many, many_awaits={
                              "cfstream": ours_many, "raw": raw_many})
    for what, summary in profiles.items():
        if summary is None:
            continue
        result.details[f"profile of {what}"] = summary
        if "self_pct" in summary:
            top = ", ".join(f"`{f}` {p}%" for f, p in summary["self_pct"][:6])
            result.notes.append(f"waiting: {what}, py-spy ({summary['samples']} samples), "
                                f"self time: {top}")
    result.notes.append(f"waiting: one waiter, {ours['latency_ms']['n']} measured rounds of "
                        f"cfstream, {raw['latency_ms']['n']} of raw (at most {rounds} or "
                        f"{seconds:.0f} s each)")
    achieved = one["load_rate_achieved"]
    result.notes.append(f"waiting: {settings.partitions} events partitions; unrelated load "
                        f"{achieved:,.0f}/s achieved of {LOAD_RATE:,}/s")
    for name, figures in (("cfstream", ours_many), ("raw", raw_many)):
        if figures["resolved"] < many:
            result.notes.append(f"waiting: {name} resolved {figures['resolved']} of {many}")
    return result


def child(settings: Settings, role: str, **args: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bench.waiting", role, json.dumps(args)],
                            **env.child(settings), text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def expect(proc: subprocess.Popen[str], word: str) -> str:
    """The rest of the child's next line, which must start with ``word`` (any word if empty)."""
    assert proc.stdout is not None  # noqa: S101 - opened with PIPE
    line = proc.stdout.readline()
    if not line.startswith(word + " " if word else "") or not line.endswith("\n"):
        proc.kill()
        raise RuntimeError(f"{proc.args!r}: expected {word!r}, got {line!r} "
                           f"(exit {proc.wait()})")
    return line[len(word) + 1:].strip() if word else line.strip()


@contextlib.contextmanager
def stopped_after(proc: subprocess.Popen[str], profiler: Profiler | None) -> Iterator[None]:
    """Stops the profiler and the child (if it has not ended) however the block ends."""
    try:
        yield
    finally:
        stop(proc, profiler)


def stop(proc: subprocess.Popen[str], profiler: Profiler | None) -> None:
    """Stops the profiler, then the child if it has not ended."""
    if profiler is not None:
        profiler.stop()
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def appender(settings: Settings) -> Producer:
    """The bench's producer of awaited events: the client's settings, but no linger."""
    return env.raw_producer(settings, warm_topic=settings.events_topic,
                            overrides={"linger.ms": 0})


def one_waiter(settings: Settings, workdir: Path, rounds: int, seconds: float,
               profile: bool) -> dict[str, Any]:
    producer = appender(settings)
    load = child(settings, "load", rate=LOAD_RATE)
    try:
        expect(load, "ready")
        time.sleep(LOAD_LEAD_S)
        figures: dict[str, Any] = {}
        for role, name, partition in (("waiter", "cfstream", None), ("raw-waiter", "raw", None),
                                      ("waiter", "cfstream_one", 0), ("raw-waiter", "raw_one", 0)):
            profiled = profile and name == "cfstream"
            profiler = Profiler(workdir / "waiter.pyspy.txt") if profiled else None
            figures[name] = rounds_of(settings, producer, role, rounds, seconds, profiler,
                                      partition)
        every = child(settings, "raw-every", seconds=seconds / 3)
        figures["raw_every_partition"] = json.loads(expect(every, "done"))
        every.wait()
    finally:
        load.send_signal(signal.SIGTERM)
        out, _ = load.communicate(timeout=60)
    produced, seconds = json.loads(out.split("done ", 1)[1])
    figures["load_rate_achieved"] = produced / seconds
    return figures


def rounds_of(settings: Settings, producer: Producer, role: str, rounds: int, seconds: float,
              profiler: Profiler | None, partition: int | None = None) -> dict[str, Any]:
    """The measured rounds end after ``rounds`` or ``seconds``, whichever comes first."""
    proc = child(settings, role, rounds=WARM_ROUNDS + rounds, seconds=seconds,
                 partition=partition)
    appended: dict[str, float] = {}
    with stopped_after(proc, profiler):
        while True:
            word, _, execution_id = expect(proc, "").partition(" ")
            if word == "done":
                report = json.loads(execution_id)
                break
            if word != "waiting":
                raise RuntimeError(f"{role}: unexpected {word} {execution_id}")
            if len(appended) == WARM_ROUNDS and profiler is not None:
                profiler.start(proc.pid)
                time.sleep(PROFILER_ATTACH_S)
            time.sleep(GAP_S)
            appended[execution_id] = time.time()
            producer.produce(settings.events_topic, key=execution_id.encode(),
                             value=event(execution_id))
            producer.flush(30)
    returned: dict[str, float] = report.pop("returned")
    latencies = [(returned[i] - appended[i]) * 1000 for i in list(appended)[WARM_ROUNDS:]
                 if i in returned]
    report["latency_ms"] = env.summary(latencies)
    report["latency_ms_by_round"] = [round(v, 1) for v in latencies]
    report["warm_latency_ms"] = [round((returned[i] - appended[i]) * 1000, 1)
                                 for i in list(appended)[:WARM_ROUNDS] if i in returned]
    if profiler is not None:
        report["profile"] = profiler.report()
    return report


def many_awaits(settings: Settings, role: str, n: int, workdir: Path,
                profiler: Profiler | None = None) -> dict[str, Any]:
    producer = appender(settings)
    ids_file = workdir / f"{role}-ids.txt"
    proc = child(settings, role, n=n, ids_file=str(ids_file))
    appended: dict[str, float] = {}
    with stopped_after(proc, profiler):
        expect(proc, "ready")
        if profiler is not None:
            profiler.start(proc.pid)
            time.sleep(PROFILER_ATTACH_S)
        ids = ids_file.read_text().split()

        def send(i: int) -> None:
            execution_id = ids[i]
            value = event(execution_id)
            appended[execution_id] = time.time()
            env.produce(producer, settings.events_topic, execution_id.encode(), value)

        env.paced(n, MANY_RATE, send)
        producer.flush(30)
        report = json.loads(expect(proc, "done"))
    returned: dict[str, float] = report.pop("returned")
    report["resolved"] = len(returned)
    latencies = [(returned[i] - t) * 1000 for i, t in appended.items() if i in returned]
    report["latency_ms"] = env.summary(latencies)
    report["latency_ms_in_append_order"] = [round(v, 1) for v in latencies[::max(1, n // 100)]]
    report["rss_growth_mib"] = (report["rss_after_kib"] - report["rss_before_kib"]) / 1024
    if profiler is not None:
        report["profile"] = profiler.report()
    return report


# -- the children ---------------------------------------------------------------------------------

def say(out: TextIO, word: str, text: str = "") -> None:
    out.write(f"{word} {text}\n")
    out.flush()


def load_role(settings: Settings, rate: int) -> None:
    """Unrelated events at ``rate``/s until SIGTERM; then ``done [produced, seconds]``."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    producer = Producer(producer_config(settings))
    topic = settings.events_topic
    template = ('{"v":1,"type":"succeeded","id":"%s","task":"bench.load","ts_ms":%d,'
                '"result":null}')
    say(sys.stdout, "ready")
    started = time.monotonic()
    produced = 0
    while not stop.is_set():
        due = int((time.monotonic() - started) * rate)
        now = now_ms()
        while produced < due:
            execution_id = new_execution_id(now)
            try:
                producer.produce(topic, key=execution_id.encode(),
                                 value=(template % (execution_id, now)).encode())
            except BufferError:
                producer.poll(0.005)
                continue
            produced += 1
        producer.poll(0)
        time.sleep(0.002)
    seconds = time.monotonic() - started
    producer.flush(30)
    say(sys.stdout, "done", json.dumps([produced, seconds]))


def waiter_role(settings: Settings, rounds: int, seconds: float, partition: int | None) -> None:
    client = Client(settings)

    def wait(execution_id: str) -> None:
        Execution(execution_id, client=client).result(timeout=WAIT_TIMEOUT_S)

    waiting_rounds(rounds, seconds, wait, fresh_id(settings, partition))
    client.close()


def raw_waiter_role(settings: Settings, rounds: int, seconds: float,
                    partition: int | None) -> None:
    topic = settings.events_topic
    consumer = Consumer(consumer_config(settings, None, **{"fetch.wait.max.ms": 10}))
    partitions = len(consumer.list_topics(topic, timeout=30).topics[topic].partitions)

    def assign(execution_id: str) -> None:
        p = partition_for(execution_id.encode(), partitions)
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        consumer.assign([TopicPartition(topic, p, high)])

    def wait(execution_id: str) -> None:
        key = execution_id.encode()
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        while time.monotonic() < deadline:
            for message in batch(consumer):
                if message.error() is None and message.key() == key:
                    orjson.loads(message.value() or b"")
                    consumer.unassign()
                    return
        raise TimeoutError(f"no record of {execution_id} within {WAIT_TIMEOUT_S} s")

    waiting_rounds(rounds, seconds, wait, fresh_id(settings, partition), assign)
    consumer.close()


def raw_every_role(settings: Settings, seconds: float) -> None:
    """A Consumer of every events partition from their ends, comparing each record's key as the
    raw waiter does, for ``seconds``: its CPU share."""
    topic = settings.events_topic
    consumer = Consumer(consumer_config(settings, None, **{"fetch.wait.max.ms": 10}))
    parts = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in parts}
    consumer.assign([TopicPartition(topic, p, o) for p, o in ends.items()])
    key, read = new_execution_id().encode(), 0
    cpu0, wall0 = time.process_time(), time.monotonic()
    while time.monotonic() - wall0 < seconds:
        for message in batch(consumer):
            read += 1
            if message.error() is None and message.key() == key:
                raise RuntimeError("a fresh id's record was read")
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    say(sys.stdout, "done", json.dumps({"cpu_s": cpu, "wall_s": wall, "cpu_pct": 100 * cpu / wall,
                                        "records_per_s": read / wall}))
    consumer.close()


def batch(consumer: Consumer) -> list[Message]:
    """What one poll brings: nothing within 10 ms, or a record and up to 500 more ready ones."""
    first = consumer.poll(0.01)
    return [] if first is None else [first, *consumer.consume(500, 0)]


def fresh_id(settings: Settings, partition: int | None) -> Callable[[], str]:
    """New ids, all of whose events go to ``partition`` if it is given."""
    def make() -> str:
        while True:
            execution_id = new_execution_id()
            if partition is None or partition_for(execution_id.encode(),
                                                  settings.partitions) == partition:
                return execution_id
    return make


def waiting_rounds(rounds: int, seconds: float, wait: Callable[[str], None],
                   new_id: Callable[[], str],
                   prepare: Callable[[str], None] = lambda _: None) -> None:
    """Each round: a fresh id, ``prepare(id)``, tell the bench, ``wait(id)``; then report when
    each wait returned and the CPU and wall time of the rounds after the warm-up (which end
    after ``rounds`` or ``seconds``)."""
    returned: dict[str, float] = {}
    cpu0 = wall0 = 0.0
    for i in range(rounds):
        if i == WARM_ROUNDS:
            cpu0, wall0 = time.process_time(), time.monotonic()
        elif i > WARM_ROUNDS and time.monotonic() - wall0 > seconds:
            break
        execution_id = new_id()
        prepare(execution_id)
        say(sys.stdout, "waiting", execution_id)
        wait(execution_id)
        returned[execution_id] = time.time()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    say(sys.stdout, "done", json.dumps({"cpu_s": cpu, "wall_s": wall,
                                        "cpu_pct": 100 * cpu / wall, "returned": returned}))


def many_role(settings: Settings, n: int, ids_file: str, raw: bool) -> None:
    rss_before = proc_status_kib(os.getpid(), "VmRSS") or 0
    returned: dict[str, float] = {}
    ids = [new_execution_id() for _ in range(n)]

    async def main() -> None:
        waits: list[Awaitable[Any]]
        if raw:
            consumer = RawFutures(settings)
            waits = [consumer.wait(i) for i in ids]
        else:
            client = Client(settings)
            waits = [Execution(i, client=client).result_async(timeout=WAIT_TIMEOUT_S)
                     for i in ids]

        async def one(execution_id: str, wait: Awaitable[Any]) -> None:
            await wait
            returned[execution_id] = time.time()

        tasks = [asyncio.ensure_future(one(i, w)) for i, w in zip(ids, waits, strict=True)]
        await asyncio.sleep(0)  # every wait is registered before its first await
        if raw:
            consumer.start()
        else:
            # status() resolves once the id's partition is read to its end: one per partition.
            probes: dict[int, str] = {}
            while len(probes) < settings.partitions:
                probe = new_execution_id()
                probes.setdefault(partition_for(probe.encode(), settings.partitions), probe)
            await asyncio.gather(*(Execution(p, client=client).status_async(WAIT_TIMEOUT_S)
                                   for p in probes.values()))
        Path(ids_file).write_text("\n".join(ids))
        say(sys.stdout, "ready")
        pauses = GcPauses()
        await asyncio.gather(*tasks, return_exceptions=True)
        gc.callbacks.remove(pauses.on)
        rss_after = proc_status_kib(os.getpid(), "VmRSS") or 0
        say(sys.stdout, "done", json.dumps({
            "rss_before_kib": rss_before, "rss_after_kib": rss_after,
            "hwm_kib": proc_status_kib(os.getpid(), "VmHWM"), "gc_pauses": pauses.summary(),
            "returned": returned}))
        if raw:
            consumer.close()
        else:
            client.close()

    asyncio.run(main())


class GcPauses:
    """The garbage collector's pauses from now on (a full collection of 10k waits' objects
    stops every thread)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.ms: dict[int, list[float]] = {0: [], 1: [], 2: []}
        gc.callbacks.append(self.on)

    def on(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.ms[info["generation"]].append((time.perf_counter() - self.started) * 1000)

    def summary(self) -> dict[str, Any]:
        return {f"gen{g}": {"n": len(ms), "max_ms": round(max(ms, default=0.0), 1),
                            "total_ms": round(sum(ms), 1)} for g, ms in self.ms.items()}


class RawFutures:
    """The raw baseline of many awaits: one consumer of every partition, from their ends, in a
    thread that resolves the future of each awaited key."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.events_topic
        self.consumer = Consumer(consumer_config(settings, None, **{"fetch.wait.max.ms": 10}))
        parts = self.consumer.list_topics(self.topic, timeout=30).topics[self.topic].partitions
        ends = {p: self.consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                       timeout=30)[1] for p in parts}
        self.consumer.assign([TopicPartition(self.topic, p, o) for p, o in ends.items()])
        self.futures: dict[bytes, asyncio.Future[Any]] = {}
        self.loop = asyncio.get_running_loop()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.read, daemon=True)

    def wait(self, execution_id: str) -> asyncio.Future[Any]:
        future = self.futures[execution_id.encode()] = self.loop.create_future()
        return future

    def start(self) -> None:
        self.thread.start()

    def read(self) -> None:
        while not self.stop.is_set():
            for message in batch(self.consumer):
                future = self.futures.get(message.key() or b"")
                if message.error() is None and future is not None:
                    self.loop.call_soon_threadsafe(settle, future,
                                                   orjson.loads(message.value() or b""))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.consumer.close()


def settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def main(argv: list[str]) -> None:
    role, args = argv[0], json.loads(argv[1])
    settings = Settings()
    if role == "load":
        load_role(settings, **args)
    elif role == "waiter":
        waiter_role(settings, **args)
    elif role == "raw-waiter":
        raw_waiter_role(settings, **args)
    elif role == "raw-every":
        raw_every_role(settings, **args)
    elif role in ("many", "raw-many"):
        many_role(settings, raw=role == "raw-many", **args)
    else:
        raise SystemExit(f"unknown role {role}")


if __name__ == "__main__":
    main(sys.argv[1:])
