"""6. End-to-end latency with delay=0: ``submit()`` to the worker's ``started`` event.

One processor replica and one worker run as subprocesses; calls of a no-op task (no delay, no
defer) are submitted at a steady rate; latency = the ``started`` event's ``ts_ms`` (stamped by
the worker as it starts the task) minus the wall time just before ``submit()``. The path crosses
Kafka twice (calls -> processor -> executions -> worker). Baseline: one raw produce -> consume
hop at the same rate, with the client's producer settings.

Warm-up runs a call through every partition first: the processor and the worker each do a
one-off piece of work on the first record of a newly assigned partition, which is start-up
cost, not the steady-state latency measured here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from confluent_kafka import murmur2

from bench import bench_tasks, env
from bench.timers import raw_latency
from cfstream.client import Client
from cfstream.execution import Execution


def run(bootstrap: str, workdir: Path, quick: bool, profile: bool,
        shared: dict[str, Any]) -> env.Result:
    rate, seconds = (50.0, 4.0) if quick else (200.0, 10.0)
    total = int(rate * seconds)
    result = env.Result("e2e")
    settings = env.new_settings(bootstrap, "e2e")
    services = env.services(settings, workdir)
    client = Client(settings)
    events = env.LatencyReader(settings, settings.events_topic)
    executions = env.LatencyReader(settings, settings.executions_topic)
    try:
        processor = services.processor()
        worker = services.worker()
        processor.wait_ready()
        worker.wait_ready()
        for warm in warm_up(client, settings.partitions):
            warm.result(timeout=120)  # both joined their groups and run
        submitted: dict[str, float] = {}

        def send(i: int) -> None:
            at = time.time() * 1000
            submitted[bench_tasks.noop.submit_to(client, i).id] = at

        env.paced(total, rate, send, "e2e: submitting")
        client.flush(30)
        events.wait_count(total, 60,
                          lambda e: e.get("type") == "started" and e.get("id") in submitted,
                          what="e2e: started events")
    finally:
        executions.close()
        events.close()
        client.close()
        services.close()
    started = {e["id"]: e["ts_ms"] for _, _, e in events.records
               if e.get("type") == "started" and e.get("id") in submitted}
    latencies = [started[i] - submitted[i] for i in started]
    ours = env.summary(latencies)
    # Where the time goes: submit -> the processor fires (fired_ms), fired -> the worker starts.
    fired = {e["id"]: e["fired_ms"] for _, _, e in executions.records if e.get("id") in submitted}
    to_fire = env.summary([fired[i] - submitted[i] for i in fired])
    to_start = env.summary([started[i] - fired[i] for i in started if i in fired])
    raw = raw_latency(settings, rate, seconds)
    for q, target in (("p50", "<= 10 ms"), ("p99", "<= 50 ms")):
        result.row(f"submit -> started {q}, delay=0 @ {rate:.0f}/s", ours[q], raw[q], "ms",
                   target, higher_is_better=False)
    result.row(f"of which submit -> fired (processor) p50 @ {rate:.0f}/s", to_fire["p50"], raw["p50"],
               "ms", higher_is_better=False)
    result.row(f"of which fired -> started (worker) p50 @ {rate:.0f}/s", to_start["p50"], raw["p50"],
               "ms", higher_is_better=False)
    result.details.update(rate=rate, seconds=seconds, calls=total, started=len(started),
                          latency_ms=ours, submit_to_fired_ms=to_fire,
                          fired_to_started_ms=to_start, raw_produce_to_consume_ms=raw)
    if len(started) < total:
        result.notes.append(f"e2e: {len(started)} of {total} calls started within the wait")
    return result


def warm_up(client: Client, partitions: int) -> list[Execution]:
    """Calls until every partition has one (a call's key, and so its partition, is its id)."""
    calls: dict[int, Execution] = {}
    i = -1
    while len(calls) < partitions:
        call = bench_tasks.noop.submit_to(client, i)
        calls.setdefault(murmur2(call.id.encode(), partitions), call)
        i -= 1
    return list(calls.values())
