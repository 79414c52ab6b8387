"""A running pipeline per test module: processor replica(s) and worker(s) as real processes."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import cfstream as cf
from cfstream.kafka.topics import ensure_topics

sys.path.insert(0, str(Path(__file__).parent))

from harness import EventLog, Pipeline, PipelineFactory, Services  # noqa: E402

# Partitions for test topics: enough for two replicas to split, few enough to start fast.
PARTITIONS = 4



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
