"""Retrying client calls that fail while the cluster settles (new topics, leader elections)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from cfstream.errors import KafkaUnavailable

T = TypeVar("T")

# A new topic's leaders can take a few seconds to serve offsets even after metadata shows them.
SETTLE_TIMEOUT = 30.0
# Errors that mean "not yet" rather than "no": librdkafka does not flag all of them retriable.
SETTLING = frozenset({
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TRANSPORT, KafkaError._TIMED_OUT,
    KafkaError.REQUEST_TIMED_OUT, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    # The group's coordinator moved (its broker died): the next try finds the new one.
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError._ALL_BROKERS_DOWN, KafkaError._WAIT_COORD,
    # A partition whose leader the client's metadata does not name (a broker just died).
    KafkaError._UNKNOWN_PARTITION,
    # A new leader whose high watermark has yet to catch up (after a broker died): a worker
    # reading where the events topic ends crashed on it in the cluster chaos test.
    KafkaError.OFFSET_NOT_AVAILABLE,
})


def settled(call: Callable[[], T], timeout: float = SETTLE_TIMEOUT) -> T:
    """``call()``, retried on retriable Kafka errors until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            retriable = isinstance(error, KafkaError) and (
                error.retriable() or error.code() in SETTLING)
            if not retriable or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


class Lister(Protocol):
    """A client that reads metadata without creating topics: a Consumer or an AdminClient (a
    producer's request may create a missing topic with the broker's defaults)."""

    def list_topics(self, topic: str, timeout: float) -> Any: ...


def partitions(client: Lister, topic: str, timeout: float = SETTLE_TIMEOUT) -> list[int]:
    """The partitions of ``topic``, retried while the cluster settles.

    Just after a topic is created, a broker other than the one that created it can answer that
    the topic does not exist, with no partitions: an empty answer read as the truth left a
    reader of a 3-broker cluster assigned to nothing (the cluster chaos test's event follower
    never saw an event). KafkaUnavailable if the topic has no partitions after ``timeout``."""

    def ask() -> list[int]:
        metadata = client.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise KafkaException(metadata.error if metadata is not None
                                 else KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
        if not metadata.partitions:
            raise KafkaException(KafkaError(KafkaError.LEADER_NOT_AVAILABLE))
        return sorted(metadata.partitions)

    try:
        return settled(ask, timeout)
    except KafkaException as exc:
        raise KafkaUnavailable(f"topic {topic}: no partitions ({exc}); `cfstream topics "
                               "create` makes the topics") from exc


def watermarks(consumer: Consumer, topic: str, partition: int,
               timeout: float = 30) -> tuple[int, int]:
    """The (low, high) watermark offsets of a partition, retried while the cluster settles."""
    tp = TopicPartition(topic, partition)
    low, high = settled(lambda: consumer.get_watermark_offsets(tp, timeout=timeout))
    return int(low), int(high)


def offsets_since(consumer: Consumer, topic: str, partitions: list[int],
                  since_ms: int) -> tuple[dict[int, int], dict[int, int]]:
    """Partition -> the first offset of a record stamped ``since_ms`` or later, or the end of
    the partition when there is none yet; and partition -> the end it was measured against.
    Retried while the cluster settles.

    The ends are asked for first: a record appended between the two requests is stamped after
    ``since_ms``, so it is found by the second or lies past the end asked for before it. A
    partition's own error (a new topic's leader not serving yet) is retried like a failed call,
    never read as "no such record"."""
    ends = {p: watermarks(consumer, topic, p)[1] for p in partitions}

    def ask() -> list[TopicPartition]:
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, max(since_ms, 0)) for p in partitions], timeout=30)
        for tp in found:
            if tp.error is not None:
                raise KafkaException(tp.error)
        return list(found)

    starts = {tp.partition: tp.offset if tp.offset >= 0 else ends[tp.partition]
              for tp in settled(ask)}
    return starts, ends
