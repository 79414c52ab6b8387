"""The metrics each service exports, each set on its own registry.

A registry per service instance (never prometheus_client's global REGISTRY) lets one process,
such as the test suite, run several processors and workers without name clashes.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

# Every metric name starts with this, so dashboards can find cfstream's series at a glance.
NAMESPACE = "cfstream"
# Fire lateness is bounded below by the tick interval (20 ms by default) and should stay under a
# second; 1 ms .. 10 s in 1-2.5-5 steps resolves both a healthy run and a stalled processor.
LATENESS_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


def new_registry(process_metrics: bool = True) -> CollectorRegistry:
    """A fresh registry; with the process_*, python_info and python_gc_* series unless told not to."""
    registry = CollectorRegistry(auto_describe=True)
    if process_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry


def _counter(registry: CollectorRegistry, name: str, documentation: str,
             *labels: str) -> Counter:
    return Counter(name, documentation, labels, namespace=NAMESPACE, registry=registry)


def _gauge(registry: CollectorRegistry, name: str, documentation: str, *labels: str) -> Gauge:
    return Gauge(name, documentation, labels, namespace=NAMESPACE, registry=registry)


class _CommonMetrics:
    """Series both services export: merges, what they gave up on, how far behind they read."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else new_registry()
        r = self.registry
        self.dead_letters = _counter(
            r, "dead_letters", "Records sent to the dead-letter topic, by reason.", "reason")
        self.deferrals = _counter(
            r, "deferrals",
            "Calls that replaced a pending call with the same defer key (debounced), by task and "
            "where the replacement happened (processor table or backlog).", "task", "where")
        self.consumer_lag = _gauge(
            r, "consumer_lag", "Records between the committed offset and the end of the partition.",
            "topic", "partition")

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(topic=topic, partition=str(partition)).set(max(lag, 0))


class ProcessorMetrics(_CommonMetrics):
    """The stream processor: calls in, deferrals, pending keys and fires."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.calls_received = _counter(
            r, "calls_received", "Calls read from the calls topic, by task.", "task")
        self.pending_keys = _gauge(
            r, "pending_keys", "Calls waiting for their time, per calls-topic partition.",
            "partition")
        self.fires = _counter(r, "fires", "Calls whose time came and were handed to the workers.")
        self.fire_lateness = Histogram(
            "fire_lateness_seconds", "Seconds between a call's due time and its fire.",
            namespace=NAMESPACE, registry=r, buckets=LATENESS_BUCKETS,
        )
        self.restore_remaining = _gauge(
            r, "restore_remaining_records", "Changelog records a newly assigned partition has yet "
            "to restore before it processes calls.", "partition")
        self.standby_partitions = _gauge(
            r, "standby_partitions", "Partitions this replica keeps a standby copy of.")
        self.standby_lag = _gauge(
            r, "standby_lag_records", "Changelog records a standby copy has yet to apply "
            "(a takeover of the partition replays these).", "partition")
        self.startup_seconds = _gauge(
            r, "startup_seconds", "Seconds each phase of this replica's start-up took, from the "
            "process's start to its first records applied.", "phase")
        self.takeovers = _counter(
            r, "takeovers", "Partitions this replica took over, by where their state came from: "
            "a standby copy, its own disk (a tail), or nothing (cold, the whole changelog).",
            "source")
        self.takeover_records = _counter(
            r, "takeover_restored_records", "Changelog records replayed to take partitions over, "
            "by where their state came from.", "source")
        self._received: dict[str, Any] = {}
        self._deferred: dict[str, Any] = {}
        self._lagging: set[str] = set()

    def received(self, task: str, count: int = 1) -> None:
        """``count`` more calls of ``task`` read (the labelled child cached)."""
        child = self._received.get(task)
        if child is None:
            child = self._received[task] = self.calls_received.labels(task=task)
        child.inc(count)

    def set_restore_remaining(self, partition: int, records: int) -> None:
        self.restore_remaining.labels(partition=str(partition)).set(records)

    def took_over(self, source: str, records: int) -> None:
        self.takeovers.labels(source=source).inc()
        self.takeover_records.labels(source=source).inc(records)

    def set_standby_lags(self, lags: dict[int, int]) -> None:
        """The lag of each standby copy (-1: not known yet); copies gone lose their series."""
        labels = {str(p) for p in lags}
        for gone in self._lagging - labels:
            self.standby_lag.remove(gone)
        self._lagging = labels
        for partition, lag in lags.items():
            if lag >= 0:
                self.standby_lag.labels(partition=str(partition)).set(lag)

    def forget_partition(self, partition: int) -> None:
        """Drop the series of a partition that moved to another replica."""
        for gauge in (self.pending_keys, self.restore_remaining):
            try:
                gauge.remove(str(partition))
            except KeyError:
                pass

    def deferred(self, task: str, count: int = 1) -> None:
        child = self._deferred.get(task)
        if child is None:
            child = self._deferred[task] = self.deferrals.labels(task=task, where="processor")
        child.inc(count)

    def set_pending(self, partition: int, count: int) -> None:
        self.pending_keys.labels(partition=str(partition)).set(count)

    def set_startup(self, phases: dict[str, float]) -> None:
        for phase, seconds in phases.items():
            self.startup_seconds.labels(phase=phase).set(seconds)


class WorkerMetrics(_CommonMetrics):
    """The workers: executions started, succeeded and failed."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.executions_started = _counter(
            r, "executions_started", "Executions a worker began, by task.", "task")
        self.executions_succeeded = _counter(
            r, "executions_succeeded", "Executions that returned, by task.", "task")
        self.executions_failed = _counter(
            r, "executions_failed", "Executions that raised (each attempt counts), by task.",
            "task")
        self.retries = _counter(
            r, "retries", "Failed attempts put back on the calls topic to run again, by task.",
            "task")
        self._by_task: dict[tuple[Counter, str], Any] = {}
        self._counted: dict[tuple[Counter, str], int] = {}

    def count(self, counter: Counter, task: str) -> None:
        """``counter{task=task}`` + 1, added at the next :meth:`publish`: a labelled child's
        inc() takes a lock and costs more than the rest of an execution's metrics together, so
        the worker adds up a turn's counts first."""
        key = (counter, task)
        counted = self._counted
        counted[key] = counted.get(key, 0) + 1

    def publish(self) -> None:
        """Add the counts made since the last call to their counters (the worker does so at the
        end of each turn)."""
        if not self._counted:
            return
        for key, amount in self._counted.items():
            child = self._by_task.get(key)
            if child is None:  # looked up once a task: labels() is slow
                counter, task = key
                child = self._by_task[key] = counter.labels(task=task)
            child.inc(amount)
        self._counted.clear()
