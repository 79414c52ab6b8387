"""Real processes against the real broker: processor replicas, workers, and an event log."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

import cfstream as cf
from cfstream.clock import now_ms
from cfstream.dev import services
from cfstream.events.tail import tail
from cfstream.settings import Settings

HERE = Path(__file__).parent
# A cold processor joins the group, creates its changelog and restores before it fires anything.
READY_TIMEOUT = 120
# How late a start may be after its due time on a loaded 2-core machine; typical is ~50 ms.
LATE_MS = 2000
TASK_MODULES = ("pipeline_tasks",)
Event = dict[str, Any]


class Services(services.Services):
    """The pipeline tests' services: their task modules on the path, workers of 4 slots."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        super().__init__(settings, workdir, import_paths=[HERE], worker_modules=TASK_MODULES)

    def worker(self, name: str = "worker", modules: Sequence[str] | None = None,
               concurrency: int | None = 4, **env: str) -> services.Service:
        return super().worker(name, modules, concurrency, **env)


class EventLog:
    """Every event of the prefix, read in the background; tests wait on it with deadlines."""

    def __init__(self, settings: Settings) -> None:
        self.events: list[Event] = []
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, args=(settings,), daemon=True)
        self._thread.start()

    def _run(self, settings: Settings) -> None:
        for event in tail(settings, follow=True, stop=lambda: self._stopped):
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[Event], bool], count: int = 1,
                 timeout: float = 30) -> list[Event]:
        """The first ``count`` events matching ``predicate``; AssertionError at the deadline."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for e in self.events if predicate(e)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"only {len(found)} of {count} events within {timeout}s")
                self._cond.wait(left)

    def of(self, execution_id: str, type_: str | None = None) -> list[Event]:
        with self._cond:
            return [e for e in self.events
                    if e.get("id") == execution_id and (type_ is None or e["type"] == type_)]

    def one(self, execution_id: str, type_: str, timeout: float = 30) -> Event:
        return self.wait_for(lambda e: e.get("id") == execution_id and e["type"] == type_,
                             timeout=timeout)[0]

    def close(self) -> None:
        self._stopped = True
        self._thread.join(timeout=5)


@dataclass(frozen=True)
class GroupSnapshot:
    """The processors' group as the coordinator described it at ``at_ms``."""

    at_ms: int
    state: str  # STABLE, PREPARING_REBALANCING, ...
    held: dict[str, frozenset[int]]  # calls partitions by member (its instance id if static)
    member_ids: dict[str, str]  # member id by the same name


class GroupWatch:
    """The processors' group, described every ``interval`` seconds in the background, so a
    test sees every rebalance that lasts longer than that, with its time."""

    def __init__(self, admin: AdminClient, settings: Settings, interval: float = 0.1) -> None:
        self.admin, self.interval = admin, interval
        self.group, self.topic = settings.processor_group, settings.calls_topic
        self.snapshots: list[GroupSnapshot] = []
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _describe(self) -> GroupSnapshot:
        description = self.admin.describe_consumer_groups([self.group])[self.group].result(10)
        held, member_ids = {}, {}
        for m in description.members:
            name = m.group_instance_id or m.member_id
            held[name] = frozenset(tp.partition for tp in m.assignment.topic_partitions
                                   if tp.topic == self.topic)
            member_ids[name] = m.member_id
        return GroupSnapshot(now_ms(), description.state.name, held, member_ids)

    def _run(self) -> None:
        while not self._stopped:
            try:
                snapshot = self._describe()
            except Exception:  # the coordinator moving or busy: ask again
                snapshot = None
            if snapshot is not None:
                with self._cond:
                    self.snapshots.append(snapshot)
                    self._cond.notify_all()
            time.sleep(self.interval)

    def wait_for(self, predicate: Callable[[GroupSnapshot], bool], timeout: float,
                 since_ms: int = 0) -> GroupSnapshot:
        """The first snapshot from ``since_ms`` on that matches; AssertionError at the deadline."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = next((s for s in self.snapshots
                              if s.at_ms >= since_ms and predicate(s)), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    last = self.snapshots[-1] if self.snapshots else None
                    raise AssertionError(f"no such group within {timeout}s; last: {last}")
                self._cond.wait(left)

    def since(self, at_ms: int) -> list[GroupSnapshot]:
        with self._cond:
            return [s for s in self.snapshots if s.at_ms >= at_ms]

    def close(self) -> None:
        self._stopped = True
        self._thread.join(timeout=15)


def pipeline_conftest() -> types.ModuleType:
    """tests/pipeline/conftest.py under a name of its own, for other folders to take its
    ``pipeline_factory`` (every conftest.py outside a package is imported as ``conftest``, so a
    plain import would find whichever was loaded last)."""
    name = "cfstream_tests_pipeline_conftest"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Pipeline:
    settings: cf.Settings
    services: Services
    client: cf.Client
    events: EventLog

    def submit(self, task: cf.Task, *args: object, **kwargs: object) -> cf.Execution:
        return task.submit_to(self.client, *args, **kwargs)

    def result(self, execution: cf.Execution, timeout: float = 60) -> object:
        """``execution.result()``, and on a timeout the events seen for it and its successors."""
        try:
            return execution.result(timeout=timeout)
        except TimeoutError:
            chain, current = [], execution.id
            while current and len(chain) < 50:
                events = self.events.of(current)
                chain.append((current, [(e["type"], e.get("ts_ms"), e.get("successor"))
                                        for e in events]))
                current = next((e["successor"] for e in events if e["type"] == "deferred"), None)
            raise AssertionError(f"no result for {execution.id}; events: {chain}") from None

    def wait_ready(self) -> None:
        import pipeline_tasks

        self.submit(pipeline_tasks.slow, 0).result(timeout=READY_TIMEOUT)


PipelineFactory = Callable[..., Pipeline]
