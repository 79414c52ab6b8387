"""Load for the console's performance test: events at a steady rate on the real events topic,
and what the page's renders cost meanwhile."""

from __future__ import annotations

import json
import statistics
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer

from cfstream.clock import now_ms
from cfstream.kafka.config import producer_config
from cfstream.settings import Settings

TASK = "load:synthetic"


class EventLoad:
    """A thread writing ``rate`` events a second, as a busy pipeline does: calls scheduled,
    started a few ms later and succeeded, each with its own execution id and key."""

    def __init__(self, settings: Settings, rate: int) -> None:
        self.rate = rate
        self.produced = 0
        self._topic = settings.events_topic
        self._producer = Producer(producer_config(settings))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-load", daemon=True)

    def __enter__(self) -> EventLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._producer.flush(30)

    def _events(self, ts: int) -> list[dict[str, Any]]:
        execution_id = str(uuid.uuid4())
        base = {"v": 1, "id": execution_id, "task": TASK, "defer_key": execution_id[-6:]}
        return [{**base, "type": "scheduled", "ts_ms": ts - 20, "due_ms": ts,
                 "submitted_ms": ts - 21},
                {**base, "type": "started", "ts_ms": ts + 3, "worker": "load:1", "due_ms": ts,
                 "fired_ms": ts + 1 + self.produced % 7},
                {**base, "type": "succeeded", "ts_ms": ts + 9, "worker": "load:1",
                 "result": self.produced}]

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(0.05):
            due = int((time.monotonic() - started) * self.rate)
            while self.produced + 3 <= due:
                for event in self._events(now_ms()):
                    self._producer.produce(self._topic, key=event["id"].encode(),
                                           value=json.dumps(event).encode())
                    self.produced += 1
            self._producer.poll(0)


@dataclass
class Figures:
    """What the page's renders cost over a measured stretch."""

    section: str
    updates: int
    seconds: float
    render_median_ms: float
    render_p95_ms: float
    render_max_ms: float
    snapshot_kib: float
    heap_mib: float
    nodes: int

    def line(self) -> str:
        return (f"{self.section:<10} {self.updates} updates in {self.seconds:.1f} s, render + "
                f"layout median {self.render_median_ms:.1f} ms, p95 {self.render_p95_ms:.1f} ms, "
                f"max {self.render_max_ms:.1f} ms; snapshot {self.snapshot_kib:.0f} KiB; "
                f"JS heap {self.heap_mib:.1f} MiB; {self.nodes} DOM nodes")


def measure(page: Any, cdp: Any, section: str, seconds: float) -> Figures:
    """Render times of the updates arriving over ``seconds`` (a measuring window, not a wait
    for something to happen), then the heap and DOM size."""
    page.evaluate("window.__console.renders = []; window.__console.messages = 0")
    started = time.monotonic()
    page.wait_for_timeout(seconds * 1000)
    took = time.monotonic() - started
    seen = page.evaluate("({renders: window.__console.renders, "
                         "messages: window.__console.messages, bytes: window.__console.bytes})")
    cdp.send("HeapProfiler.collectGarbage")
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    renders = sorted(seen["renders"]) or [0.0]
    return Figures(section, seen["messages"], took, statistics.median(renders),
                   renders[min(len(renders) - 1, int(0.95 * len(renders)))], renders[-1],
                   seen["bytes"] / 1024, metrics["JSHeapUsedSize"] / 2**20, int(metrics["Nodes"]))
