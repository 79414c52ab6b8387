"""Starting a partition's fetch at once (cfstream.kafka.fetching): resumed, then sought."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from cfstream.kafka.fetching import fetch_from, resume


class Seeking:
    """A consumer that records what it is asked, whose seek() answers with ``code`` (None: it
    seeks) and whose positions are ``positions``."""

    def __init__(self, code: int | None = None, positions: dict[int, int] | None = None) -> None:
        self.code = code
        self.positions = positions or {}
        self.calls: list[tuple[str, Any]] = []

    def seek(self, tp: TopicPartition) -> None:
        if self.code is not None:
            raise KafkaException(KafkaError(self.code, "seek"))
        self.calls.append(("seek", (tp.partition, tp.offset)))

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("resume", [tp.partition for tp in partitions]))

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.positions.get(tp.partition, -1001))
                for tp in partitions]


def test_a_restored_partition_is_fetched_from_its_position_unless_not_started_yet() -> None:
    tp = TopicPartition("calls", 0, 42)
    consumer = Seeking()
    fetch_from(consumer, tp)  # type: ignore[arg-type]
    assert consumer.calls == [("seek", (0, 42))]
    fetch_from(Seeking(KafkaError._STATE), tp)  # type: ignore[arg-type] # starts there anyway
    fetch_from(Seeking(KafkaError._OUTDATED), tp)  # type: ignore[arg-type] # a rebalance's turn
    fetch_from(consumer, TopicPartition("calls", 0, 0))  # type: ignore[arg-type]
    assert consumer.calls[-1] == ("seek", (0, OFFSET_BEGINNING))  # the same place, woken
    with pytest.raises(KafkaException):
        fetch_from(Seeking(KafkaError._TRANSPORT), tp)  # type: ignore[arg-type]


def test_partitions_are_resumed_then_sought_where_given_or_where_they_stand() -> None:
    consumer = Seeking(positions={1: 7})  # partition 2 never fetched: no position
    resume(consumer, [TopicPartition("t", 0, 42), TopicPartition("t", 1),  # type: ignore[arg-type]
                      TopicPartition("t", 2)])
    assert consumer.calls == [("resume", [0, 1, 2]), ("seek", (0, 42)), ("seek", (1, 7))]
    nothing = Seeking()
    resume(nothing, [])  # type: ignore[arg-type]
    assert nothing.calls == []


@pytest.mark.kafka
@pytest.mark.timeout(60)
def test_a_resumed_partition_is_fetched_at_once(kafka_bootstrap: str, admin: Any,
                                                create_topics: Any, topic_prefix: str) -> None:
    """A record produced while its partition is paused is read soon after the resume, not at
    the fetcher's next wake-up (up to ~1 s: librdkafka wakes it for a seek, not a resume).
    Five rounds: left to a plain resume, most of them waited."""
    (topic,) = create_topics(admin, [f"{topic_prefix}.fetching"])
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 0})
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"{topic_prefix}.g",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    tp = TopicPartition(topic, 0, 0)
    try:
        consumer.assign([tp])
        producer.produce(topic, b"first", partition=0)  # read once the consumer is connected
        assert producer.flush(10) == 0
        first = None
        deadline = time.monotonic() + 30
        while first is None and time.monotonic() < deadline:
            first = consumer.poll(0.1)
        assert first is not None and first.value() == b"first"
        waits = []
        for i in range(5):
            consumer.pause([tp])
            time.sleep(0.2)  # the fetcher goes idle: nothing it may fetch
            producer.produce(topic, f"{i}".encode(), partition=0)
            assert producer.flush(10) == 0
            resumed = time.monotonic()
            resume(consumer, [TopicPartition(topic, 0)])
            message = None
            while message is None and time.monotonic() - resumed < 5:
                message = consumer.poll(0.05)
                if message is not None and message.error() is not None:
                    message = None
            assert message is not None and message.value() == f"{i}".encode()
            waits.append(time.monotonic() - resumed)
        assert max(waits) < 0.5, waits
    finally:
        consumer.close()


@pytest.mark.kafka
@pytest.mark.timeout(60)
def test_a_partition_resumed_at_offset_0_is_fetched_at_once(
        kafka_bootstrap: str, admin: Any, create_topics: Any, topic_prefix: str) -> None:
    """The same at offset 0, where a restored processor partition of an empty topic starts: a
    seek to 0 is no new start for a fetcher already at 0."""
    (topic,) = create_topics(admin, [f"{topic_prefix}.fetching0"])
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 0})
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"{topic_prefix}.g",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    tp = TopicPartition(topic, 0, 0)
    try:
        consumer.assign([tp])
        consumer.pause([tp])
        time.sleep(1.5)  # assigned, paused at 0, the fetcher idle
        producer.produce(topic, b"0", partition=0)
        assert producer.flush(10) == 0
        resumed = time.monotonic()
        resume(consumer, [TopicPartition(topic, 0, 0)])
        message = None
        while message is None and time.monotonic() - resumed < 5:
            message = consumer.poll(0.05)
        assert message is not None and message.value() == b"0"
        assert time.monotonic() - resumed < 0.5
    finally:
        consumer.close()
