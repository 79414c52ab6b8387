"""Workers: executions/s one worker runs off a filled executions topic, and its CPU per execution.

Each round writes ``n`` executions of one task to an executions topic of its own, as the
processor writes them, then starts one worker (``cfstream worker bench.bench_tasks``, default
settings unless said) and waits until its group has committed every execution; then it reads the
events topic: the rate is the executions ended (``succeeded`` or ``failed``) over the time from
the first ``started`` event to the last outcome, both stamped by the worker. The worker's CPU is
read from /proc from its readiness until the bench sees that last commit.

Tasks: a no-op, one that sleeps 1 ms (the rate concurrency allows is ``concurrency / 1 ms``), and
an async one that awaits a 1 ms sleep.

Baseline, in the same run: a raw confluent-kafka loop with the worker's guarantees and nothing
else: take a batch of executions, produce a ``started`` record for each and flush, produce an
outcome record for each and flush, commit the batch. For the sleeping tasks, also what this
machine runs of them with nothing else: ``concurrency`` threads calling the task in a loop (the
async one: as many coroutines awaiting it on one event loop). A 1 ms sleep takes longer than
1 ms, and a thread waits for the interpreter's lock after it, so that rate is below
``concurrency / 1 ms`` by itself (8 threads on the 2-core box: 6.3-7.4k/s of 8k/s).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from bench import bench_tasks, env
from bench.replicas import cpu_seconds
from cfstream.calls import new_call
from cfstream.codec import dumps
from cfstream.kafka.config import consumer_config
from cfstream.kafka.retry import partitions
from cfstream.settings import DEFAULT_WORKER_CONCURRENCY, Settings
from cfstream.task import Task
from cfstream.wire import FiredCall

ROUNDS = 3
DEFAULT_CONCURRENCY = DEFAULT_WORKER_CONCURRENCY
TASKS: dict[str, Task[Any, Any]] = {
    "no-op": bench_tasks.noop,
    "1 ms sleep": bench_tasks.sleep_1ms,
    "async 1 ms sleep": bench_tasks.async_sleep_1ms,
}


def fill(settings: Settings, task_name: str, total: int) -> None:
    """``total`` executions of ``task_name`` on the executions topic, each its own key."""
    producer = env.raw_producer(settings)
    progress = env.Progress(f"worker: filling {settings.executions_topic}", total)
    for i in range(total):
        call = new_call(task_name, {"i": i}, {}, delay_ms=0, defer_key=None, max_wait_ms=None)
        fired = FiredCall(call, due_ms=call.submitted_ms, fired_ms=call.submitted_ms)
        env.produce(producer, settings.executions_topic, call.key.encode(),
                    dumps(fired.to_dict()))
        progress(i + 1)
    producer.flush(60)
    progress.finish()


class EventTimes:
    """Reads the events topic from the beginning: when the first ``started`` and the last
    ``succeeded`` event were stamped, and how many succeeded."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = Consumer(consumer_config(settings, None))
        topic = settings.events_topic
        parts = partitions(self.consumer, topic)
        self.consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        self.first_started: int | None = None
        self.last_ended = 0
        self.ended = 0

    def read(self) -> None:
        for message in self.consumer.consume(10_000, 0.1):
            if message.error() is not None:
                continue
            event = json.loads(message.value() or b"{}")
            if event.get("type") == "started":
                stamp = event["ts_ms"]
                self.first_started = min(self.first_started or stamp, stamp)
            elif event.get("type") in ("succeeded", "failed"):
                self.ended += 1
                self.last_ended = max(self.last_ended, event["ts_ms"])

    def close(self) -> None:
        self.consumer.close()


def cfstream_round(bootstrap: str, workdir: Path, task_name: str, total: int,
                   concurrency: int | None) -> dict[str, float]:
    """One round: the worker runs ``total`` executions. While it runs, the bench only polls the
    workers' committed offsets; the events are fetched and read once every execution is
    committed. Reading and decoding them alongside took a fifth to a third of a core (two events
    an execution) on the box the worker and the broker share, which the raw loop's round never
    had to spare. The worker's CPU is counted until the bench sees that last commit (the worker
    commits every second, so up to ~1.2 s of an idle worker is in it)."""
    settings = env.new_settings(bootstrap, "worker")
    fill(settings, task_name, total)
    services = env.services(settings, workdir)
    topic = settings.executions_topic
    group = env.GroupOffsets(settings, f"{settings.topic_prefix}.workers", topic,
                             list(env.end_offsets(settings, topic)))
    events: EventTimes | None = None
    try:
        worker = services.worker(concurrency=concurrency)
        worker.wait_ready()
        cpu_before = cpu_seconds(worker.pid)
        progress = env.Progress("worker: executions committed", total)
        deadline = time.monotonic() + max(120.0, total / 200)
        while progress.done < total and time.monotonic() < deadline:
            time.sleep(0.2)
            progress(group.total())
        progress.finish()
        cpu = cpu_seconds(worker.pid) - cpu_before
        events = EventTimes(settings)
        while events.ended < total and time.monotonic() < deadline + 30:
            events.read()
    finally:
        if events is not None:
            events.close()
        services.close()
    if events.ended < total or events.first_started is None:
        raise RuntimeError(f"worker: {progress.done} of {total} executions committed and "
                           f"{events.ended} ended in time")
    seconds = max(events.last_ended - events.first_started, 1) / 1000
    return {"per_s": total / seconds, "cpu_us": cpu / total * 1e6}


def raw_round(bootstrap: str, total: int) -> dict[str, float]:
    """The raw loop (see the module's doc) over ``total`` executions."""
    settings = env.new_settings(bootstrap, "worker-raw")
    fill(settings, bench_tasks.noop.name, total)
    consumer = Consumer(consumer_config(settings, f"{settings.topic_prefix}-raw",
                                        **{"auto.offset.reset": "earliest"}))
    consumer.subscribe([settings.executions_topic])
    producer = env.raw_producer(settings, settings.events_topic)
    done = 0
    began: float | None = None
    cpu_before = time.process_time()
    deadline = time.monotonic() + max(120.0, total / 200)
    try:
        while done < total and time.monotonic() < deadline:
            batch = [m for m in consumer.consume(500, 0.1) if m.error() is None]
            if not batch:
                continue
            if began is None:
                began = time.monotonic()
            ids = [json.loads(m.value() or b"{}")["id"].encode() for m in batch]
            for id_ in ids:
                env.produce(producer, settings.events_topic, id_,
                            dumps({"type": "started", "id": id_.decode(),
                                   "ts_ms": int(time.time() * 1000)}))
            producer.flush(30)
            for id_ in ids:
                env.produce(producer, settings.events_topic, id_,
                            dumps({"type": "succeeded", "id": id_.decode(),
                                   "ts_ms": int(time.time() * 1000), "result": None}))
            producer.flush(30)
            consumer.commit(asynchronous=False)
            done += len(batch)
        elapsed = time.monotonic() - (began or time.monotonic())
        cpu = time.process_time() - cpu_before
    finally:
        consumer.close()
    if done < total:
        raise RuntimeError(f"raw worker loop: {done} of {total} executions in time")
    return {"per_s": total / max(elapsed, 1e-3), "cpu_us": cpu / total * 1e6}


def bare_round(task: Task[Any, Any], concurrency: int, seconds: float) -> float:
    """Calls of ``task`` a second, ``concurrency`` at once with nothing else running (see the
    module's doc)."""
    done = [0] * concurrency
    stop = time.monotonic() + seconds
    if task.is_async:
        async def loop(slot: int) -> None:
            while time.monotonic() < stop:
                await task.fn(slot)
                done[slot] += 1

        async def all_loops() -> None:
            await asyncio.gather(*(loop(slot) for slot in range(concurrency)))

        began = time.monotonic()
        asyncio.run(all_loops())
    else:
        def call(slot: int) -> None:
            while time.monotonic() < stop:
                task.fn(slot)
                done[slot] += 1

        threads = [threading.Thread(target=call, args=(slot,)) for slot in range(concurrency)]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return sum(done) / (time.monotonic() - began)


def run(bootstrap: str, workdir: Path, quick: bool, profile: bool,
        shared: dict[str, Any]) -> env.Result:
    total = 3_000 if quick else 30_000
    rounds = 1 if quick else ROUNDS
    result = env.Result("worker")
    raw = [raw_round(bootstrap, total) for _ in range(rounds)]
    raw_rate = statistics.median(r["per_s"] for r in raw)
    raw_cpu = statistics.median(r["cpu_us"] for r in raw)
    details: dict[str, Any] = {"executions": total, "rounds": rounds, "raw": raw}
    for label, task in TASKS.items():
        ours = [cfstream_round(bootstrap, workdir, task.name, total, None)
                for _ in range(rounds)]
        rate = statistics.median(r["per_s"] for r in ours)
        cpu = statistics.median(r["cpu_us"] for r in ours)
        details[label] = ours
        if label == "no-op":
            result.row("executions/s, no-op task, default settings", rate, raw_rate,
                       "executions/s", ">= 20k/s and >= 0.3x raw")
            result.row("worker CPU per execution, no-op task", cpu, raw_cpu, "us",
                       higher_is_better=False)
        else:
            bound = DEFAULT_CONCURRENCY / 0.001
            bare = statistics.median(bare_round(task, DEFAULT_CONCURRENCY, 1 if quick else 3)
                                     for _ in range(rounds))
            details[f"{label}, bare"] = bare
            result.row(f"executions/s, {label}, concurrency {DEFAULT_CONCURRENCY}", rate, bound,
                       "executions/s", ">= 0.8x concurrency / 1 ms")
            result.row(f"same, against {DEFAULT_CONCURRENCY} "
                       f"{'coroutines' if task.is_async else 'threads'} running it alone", rate,
                       bare, "executions/s")
    result.details.update(details)
    result.notes.append("raw: consume a batch -> produce a started record each, flush -> "
                        "produce an outcome record each, flush -> commit; median of "
                        f"{rounds} rounds of {total:,} executions each. For the sleeping "
                        "tasks the 'raw' column is the bound concurrency allows, "
                        f"{DEFAULT_CONCURRENCY} / 1 ms, and then what {DEFAULT_CONCURRENCY} "
                        "threads (or coroutines on one event loop) run of the task with "
                        "nothing else, median of as many rounds.")
    return result
