"""Shared fixtures.

Kafka: ``kafka_bootstrap`` is ``$CFSTREAM_BOOTSTRAP_SERVERS`` if set, else a real single-node
broker (``cfstream.dev.broker``) started on a free port when a test first needs it. Under
pytest-xdist (``make test`` runs ``pytest -n 3``) the workers share that one broker: the first to
need it starts it, and the controller stops it at the end. Tests that use it are marked
``@pytest.mark.kafka`` and isolate themselves with ``topic_prefix``; a test that restarts a
broker starts one of its own.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from cfstream.dev import broker
from cfstream.dev.broker import LocalBroker
from cfstream.errors import KafkaUnavailable
from cfstream.settings import Settings

CreateTopics = Callable[..., list[str]]


# The session's broker lives here; set by the first pytest process (the xdist controller, or
# the only one) and inherited by the xdist workers it starts.
BROKER_DIR = "CFSTREAM_TESTS_BROKER_DIR"
_OWN_BROKER_DIR = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    if BROKER_DIR not in os.environ:
        path = Path(tempfile.mkdtemp(prefix="cfstream-tests-kafka-"))
        os.environ[BROKER_DIR] = str(path)
        config.stash[_OWN_BROKER_DIR] = path


def pytest_unconfigure(config: pytest.Config) -> None:
    """The process that made the broker's dir stops the broker (if a test started it)."""
    path = config.stash.get(_OWN_BROKER_DIR, None)
    if path is not None:
        broker.stop(path / "kafka")
        shutil.rmtree(path, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long tests first: in three processes (``make test``), each then takes one at the
    start, instead of all queueing at the end."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap servers of the cluster the integration tests use."""
    external = os.environ.get("CFSTREAM_BOOTSTRAP_SERVERS")
    if external:
        return external
    shared = Path(os.environ[BROKER_DIR])
    with (shared / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starts it; the others wait, then find it running
        running = broker.status(shared / "kafka")
        if not running.running:
            try:
                LocalBroker(port=None, data_dir=shared / "kafka").start()
            except KafkaUnavailable as exc:
                pytest.fail(f"could not start the test broker: {exc}", pytrace=False)
            running = broker.status(shared / "kafka")
    assert running.bootstrap_servers is not None
    return running.bootstrap_servers


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """A prefix no other test (or earlier run against the same cluster) uses."""
    name = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name).strip("-")[:60]
    return f"t-{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str) -> Settings:
    return Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)


@pytest.fixture(scope="session")
def admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


def create_and_wait(
    admin: AdminClient,
    names: list[str],
    partitions: int = 1,
    config: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Create topics and wait until metadata shows every partition with a leader."""
    new = [NewTopic(n, num_partitions=partitions, replication_factor=1, config=config or {})
           for n in names]
    for future in admin.create_topics(new, operation_timeout=timeout).values():
        future.result(timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            topics = admin.list_topics(timeout=5).topics
        except KafkaException:
            topics = {}
        if all(_ready(topics.get(n), partitions) for n in names):
            return names
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics {names} not ready after {timeout}s")
        time.sleep(0.05)


def _ready(meta: Any, partitions: int) -> bool:
    if meta is None or meta.error is not None or len(meta.partitions) != partitions:
        return False
    return all(p.leader >= 0 for p in meta.partitions.values())


@pytest.fixture
def create_topics(admin: AdminClient) -> Iterator[CreateTopics]:
    """``create_topics(admin, names, partitions, config=None)``; deletes them after the test."""
    created: list[str] = []

    def create(
        admin: AdminClient, names: list[str], partitions: int = 1,
        config: dict[str, str] | None = None,
    ) -> list[str]:
        result = create_and_wait(admin, names, partitions, config)
        created.extend(result)
        return result

    yield create
    if created:
        # Best effort: keeps a shared external cluster tidy; a temporary broker dies anyway.
        for future in admin.delete_topics(created, operation_timeout=10).values():
            try:
                future.result(timeout=10)
            except Exception:  # noqa: S110 - cleanup must not fail the test
                pass


# -- a processor partition, driven in memory ------------------------------------------------------


class FakeOutputs:
    """What a processor produces, by topic (the producer of unit tests)."""

    changelog_topic = "changelog"

    def __init__(self) -> None:
        self.sent: dict[str, list[dict[str, Any]]] = {}

    def produce(self, topic: str, key: bytes | None, value: bytes | None,
                partition: int = -1, headers: list[tuple[str, Any]] | None = None) -> None:
        self.sent.setdefault(topic, []).append(
            {"key": key, "value": value, "partition": partition, "headers": headers})

    def of(self, topic: str) -> list[dict[str, Any]]:
        return self.sent.get(topic, [])

    def values(self, topic: str) -> list[Any]:
        import json

        return [json.loads(item["value"]) for item in self.of(topic)]


@pytest.fixture
def partition_task(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``partition_task(topic_prefix="unit")``: a PartitionTask of partition 0 on a real RocksDB in a
    temp dir, producing into a FakeOutputs (``task.outputs``)."""
    from cfstream.observability.metrics import ProcessorMetrics
    from cfstream.processor.db import Databases
    from cfstream.processor.partition import PartitionTask

    made: list[PartitionTask] = []

    def make(topic_prefix: str = "unit") -> PartitionTask:
        settings = Settings(topic_prefix=topic_prefix, state_dir=tmp_path / f"state-{len(made)}")
        db = Databases(settings.state_dir, settings.calls_topic).open(0)
        outputs: Any = FakeOutputs()
        made.append(PartitionTask(settings, 0, db, outputs, ProcessorMetrics(), position=0))
        return made[-1]

    yield make
    for task in made:
        task.close()
