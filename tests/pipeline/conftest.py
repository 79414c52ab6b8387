"""A running pipeline per test module: processor replica(s) and worker(s) as real processes."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import cfstream as cf
from cfstream.kafka.topics import ensure_topics

sys.path.insert(0, str(Path(__file__).parent))

from harness import EventLog, Services  # noqa: E402

# Partitions for test topics: enough for two replicas to split, few enough to start fast.
PARTITIONS = 4
# A cold processor joins the group, creates its changelog and restores before it fires anything.
READY_TIMEOUT = 120


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


@pytest.fixture(scope="module")
def pipeline_factory(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory,
                     request: pytest.FixtureRequest) -> Iterator[PipelineFactory]:
    """Builds pipelines with their own topic prefix; everything stops at the module's end."""
    made: list[Pipeline] = []

    def make(processors: int = 1, workers: int = 1, concurrency: int = 4,
             start: bool = True, modules: tuple[str, ...] = ("pipeline_tasks",)) -> Pipeline:
        module = request.module.__name__.rsplit(".", 1)[-1]
        prefix = f"p-{module}-{uuid.uuid4().hex[:8]}"
        settings = cf.Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix,
                               partitions=PARTITIONS)
        ensure_topics(settings)
        services = Services(settings, tmp_path_factory.mktemp(prefix))
        pipeline = Pipeline(settings, services, cf.configure(settings), EventLog(settings))
        made.append(pipeline)
        if start:
            for i in range(processors):
                services.processor(f"processor-{i}")
            for i in range(workers):
                services.worker(f"worker-{i}", concurrency=concurrency, modules=modules)
            pipeline.wait_ready()
        return pipeline

    yield make
    for pipeline in made:
        pipeline.events.close()
        pipeline.services.close()
    cf.configure(None)


@pytest.fixture(scope="module")
def pipeline(pipeline_factory: PipelineFactory) -> Pipeline:
    """One processor and one worker (concurrency 4) shared by a module's tests."""
    return pipeline_factory()
