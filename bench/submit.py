"""5. Submit: ``task.submit()`` calls/s beside raw confluent-kafka produce of equal payloads.

Both sides use the producer settings cfstream's client uses (murmur2_random, one request
in flight, linger 5 ms, delivery reports for failures only), produce one record per call with
``poll(0)`` after each (as the client does), and include the final ``flush()`` in the time. The
raw side produces the exact bytes the client produced (same keys, same JSON). Rounds alternate
raw and cfstream; the median round counts.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bench import bench_tasks, env
from cfstream.client import PRODUCER_OVERRIDES, configure
from cfstream.clock import now_ms
from cfstream.codec import dumps
from cfstream.settings import Settings
from cfstream.task import Task

TARGET_RATIO = 0.8
ROUNDS = 3


def cfstream_round(task: Task[Any, Any], n: int, offset: int) -> float:
    from cfstream.client import current_client

    client = current_client()
    started = time.perf_counter()
    for i in range(offset, offset + n):
        task.submit(i)
    left = client.flush(60)
    elapsed = time.perf_counter() - started
    if left:
        raise RuntimeError(f"{left} calls still queued after flush")
    return n / elapsed


def raw_round(settings: Settings, records: list[tuple[bytes, bytes]]) -> float:
    producer = env.raw_producer(settings, overrides=PRODUCER_OVERRIDES)
    topic = settings.calls_topic
    producer.produce(topic, key=b"warm-up", value=b"{}")
    producer.flush(30)

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            raise RuntimeError(str(err))

    started = time.perf_counter()
    for key, value in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(60)
    elapsed = time.perf_counter() - started
    if left:
        raise RuntimeError(f"{left} records still queued after flush")
    return len(records) / elapsed


def sample_records(task: Task[Any, Any], n: int) -> list[tuple[bytes, bytes]]:
    """The (key, value) bytes ``task.submit(i)`` puts on the calls topic, for i in range(n)."""
    from cfstream.ids import new_execution_id
    from cfstream.wire import Call

    now = now_ms()
    out = []
    for i in range(n):
        call = Call(id=new_execution_id(now), task=task.name, args=[i], kwargs={},
                    submitted_ms=now, delay_ms=task.delay_ms,
                    defer_key=task.arguments.defer_key(task.arguments.bind((i,), {})),
                    max_wait_ms=task.max_wait_ms)
        out.append((call.key.encode(), dumps(call.to_dict())))
    return out


def run(bootstrap: str, workdir: Path, quick: bool, profile: bool,
        shared: dict[str, Any]) -> env.Result:
    n = 20_000 if quick else 200_000
    result = env.Result("submit")
    settings = env.new_settings(bootstrap, "submit")
    client = configure(settings)
    task = bench_tasks.parked  # defer=True, delay 1 h: the key and delay code run too
    try:
        task.submit(-1)  # creates the producer and checks the topics, outside the timing
        client.flush(30)
        records = sample_records(task, n)
        ours, raws = [], []
        for r in range(ROUNDS):
            raws.append(raw_round(settings, records))
            ours.append(cfstream_round(task, n, r * n))
            env.log(f"submit: round {r + 1}: cfstream {ours[-1]:,.0f}/s, raw {raws[-1]:,.0f}/s")
    finally:
        configure(None)
    ours_med, raw_med = statistics.median(ours), statistics.median(raws)
    result.row("task.submit() calls/s (incl. final flush)", ours_med, raw_med, "calls/s",
               f">= {TARGET_RATIO}x")
    result.details.update(calls_per_round=n, rounds_cfstream=ours, rounds_raw=raws,
                          payload_bytes=len(records[0][1]),
                          target_met=ours_med / raw_med >= TARGET_RATIO)
    return result
