"""The replica's input offset commits (cfstream.processor.commits): a failed commit is sent
again, a partition whose position has not moved is not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from cfstream.processor.commits import Commits


class Consumer:
    def __init__(self) -> None:
        self.sent: list[dict[int, int]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> Any:
        assert asynchronous
        self.sent.append({tp.partition: tp.offset for tp in offsets})


@dataclass
class Result:
    """A partition's result as the consumer's ``on_commit`` reads it (TopicPartition's error
    cannot be set)."""

    topic: str
    partition: int
    offset: int
    error: KafkaError | None = None


def test_moved_positions_are_committed_once() -> None:
    commits, consumer = Commits("calls"), Consumer()
    commits.commit(consumer, {0: 5, 1: 7})  # type: ignore[arg-type]
    commits.on_commit(None, [TopicPartition("calls", 0, 5), TopicPartition("calls", 1, 7)])
    commits.commit(consumer, {0: 5, 1: 9})  # type: ignore[arg-type]
    assert consumer.sent == [{0: 5, 1: 7}, {1: 9}]


def test_a_failed_commit_is_sent_again_though_nothing_moved() -> None:
    commits, consumer = Commits("calls"), Consumer()
    commits.commit(consumer, {0: 5, 1: 7})  # type: ignore[arg-type]
    failed = Result("calls", 1, 7, KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
    commits.on_commit(None, [Result("calls", 0, 5), failed])  # type: ignore[list-item]
    commits.commit(consumer, {0: 5, 1: 7})  # type: ignore[arg-type]
    # The whole request failing fails each of its partitions.
    commits.on_commit(KafkaError(KafkaError._TIMED_OUT), [TopicPartition("calls", 1, 7)])
    commits.commit(consumer, {0: 5, 1: 7})  # type: ignore[arg-type]
    assert consumer.sent == [{0: 5, 1: 7}, {1: 7}, {1: 7}]


def test_a_late_failure_of_an_older_commit_changes_nothing() -> None:
    commits, consumer = Commits("calls"), Consumer()
    commits.commit(consumer, {0: 5})  # type: ignore[arg-type]
    commits.commit(consumer, {0: 8})  # type: ignore[arg-type]
    commits.on_commit(KafkaError(KafkaError._TIMED_OUT), [TopicPartition("calls", 0, 5)])
    commits.commit(consumer, {0: 8})  # type: ignore[arg-type]
    commits.forget(0)
    commits.commit(consumer, {0: 8})  # type: ignore[arg-type]
    assert consumer.sent == [{0: 5}, {0: 8}, {0: 8}]


def test_only_the_partitions_that_failed_are_sent_again() -> None:
    commits, consumer = Commits("calls"), Consumer()
    commits.commit(consumer, {0: 5, 1: 7})  # type: ignore[arg-type]
    # librdkafka's request error is one partition's; each partition carries its own.
    commits.on_commit(KafkaError(KafkaError.REBALANCE_IN_PROGRESS), [  # type: ignore[list-item]
        Result("calls", 0, 5), Result("calls", 1, 7, KafkaError(KafkaError.REBALANCE_IN_PROGRESS))])
    commits.commit(consumer, {0: 5, 1: 7})  # type: ignore[arg-type]
    assert consumer.sent == [{0: 5, 1: 7}, {1: 7}]

