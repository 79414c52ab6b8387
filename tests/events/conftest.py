"""Fixtures of the events tests: a topic set of their own and a writer of events."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from cfstream.codec import dumps
from cfstream.kafka.topics import ensure_topics
from cfstream.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))

from events_harness import PARTITIONS, Append  # noqa: E402


@pytest.fixture
def events_settings(kafka_bootstrap: str, topic_prefix: str) -> Settings:
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix,
                        partitions=PARTITIONS)
    ensure_topics(settings)
    return settings


@pytest.fixture
def append(events_settings: Settings) -> Iterator[Append]:
    """Writes an event as processors and workers do: keyed by the id, placed by murmur2."""
    producer = Producer({"bootstrap.servers": events_settings.bootstrap_servers,
                         "partitioner": "murmur2_random", "linger.ms": 0})

    def write(kind: str, execution_id: str, **fields: object) -> None:
        event = {"v": 1, "type": kind, "id": execution_id, "task": "tests:t",
                 "ts_ms": int(time.time() * 1000), **fields}
        producer.produce(events_settings.events_topic, dumps(event), execution_id.encode())
        assert producer.flush(30) == 0

    yield write
