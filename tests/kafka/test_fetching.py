"""Starting a partition's fetch at once (cfstream.kafka.fetching): resumed, then sought."""

from __future__ import annotations

import time
from collections.abc import Iterator
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


class OnePartition:
    """A topic of one partition, a producer, and a consumer assigned to it from offset 0."""

    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        self.topic = topic
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 100})
        self.consumer.assign([TopicPartition(topic, 0, 0)])

    def produce(self, value: bytes) -> None:
        self.producer.produce(self.topic, value, partition=0)
        assert self.producer.flush(10) == 0

    def pause(self) -> None:
        self.consumer.pause([TopicPartition(self.topic, 0)])

    def resume_and_read(self, value: bytes, offset: int = -1001) -> float:
        """Resume (``fetching.resume``, from ``offset`` if one is given), read the next record,
        which must be ``value``: the seconds it took."""
        resumed = time.monotonic()
        resume(self.consumer, [TopicPartition(self.topic, 0, offset)])
        return self.read(value, resumed)

    def read(self, value: bytes, since: float, within: float = 5.0) -> float:
        message = None
        while message is None and time.monotonic() - since < within:
            message = self.consumer.poll(0.05)
            if message is not None and message.error() is not None:
                message = None
        assert message is not None and message.value() == value
        return time.monotonic() - since


@pytest.fixture
def one_partition(kafka_bootstrap: str, admin: Any, create_topics: Any,
                  topic_prefix: str) -> Iterator[OnePartition]:
    (topic,) = create_topics(admin, [f"{topic_prefix}.fetching"])
    partition = OnePartition(kafka_bootstrap, topic, f"{topic_prefix}.g")
    try:
        yield partition
    finally:
        partition.consumer.close()


@pytest.mark.kafka
@pytest.mark.timeout(60)
def test_a_resumed_partition_is_fetched_at_once(one_partition: OnePartition) -> None:
    """A record produced while its partition is paused is read soon after the resume, not at
    the fetcher's next wake-up (up to ~1 s: librdkafka wakes it for a seek, not a resume).
    Five rounds: left to a plain resume, each after the first waited ~0.8 s."""
    one_partition.produce(b"first")  # read once the consumer is connected
    one_partition.read(b"first", time.monotonic(), within=30)
    waits = []
    for i in range(5):
        one_partition.pause()
        time.sleep(0.2)  # the fetcher goes idle: nothing it may fetch
        one_partition.produce(f"{i}".encode())
        waits.append(one_partition.resume_and_read(f"{i}".encode()))
    assert max(waits) < 0.5, waits


@pytest.mark.kafka
@pytest.mark.timeout(60)
def test_a_partition_resumed_at_offset_0_is_fetched_at_once(one_partition: OnePartition) -> None:
    """The same at offset 0, where a restored processor partition of an empty topic starts: a
    seek to 0 is no new start for a fetcher already at 0 (0.55 s before it was sought as the
    partition's beginning)."""
    one_partition.pause()
    time.sleep(1.5)  # assigned, paused at 0, the fetcher idle
    one_partition.produce(b"0")
    assert one_partition.resume_and_read(b"0", offset=0) < 0.5
