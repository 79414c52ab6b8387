"""The replica's input offsets, committed asynchronously every so often, and again when a
commit fails.

A commit is only sent for a partition whose position moved since its last commit. A commit
that fails (say REBALANCE_IN_PROGRESS while another replica joins) is sent again at the next
interval: else a partition with nothing new to read would keep its old committed offset until
it is revoked (the scaling benchmark saw one stay 2,548 records behind for minutes), and a
crash would replay all of it.
"""

from __future__ import annotations

import logging

from confluent_kafka import Consumer, KafkaError, TopicPartition

from cfstream.kafka.retry import settled, watermarks

logger = logging.getLogger(__name__)


class Commits:
    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.sent: dict[int, int] = {}  # partition -> the offset last committed (or on its way)

    def commit(self, consumer: Consumer, positions: dict[int, int]) -> None:
        """Commit each partition's position that has moved since its last commit."""
        offsets = [TopicPartition(self.topic, p, position) for p, position in positions.items()
                   if self.sent.get(p) != position]
        if not offsets:
            return
        try:
            consumer.commit(offsets=offsets, asynchronous=True)
        except Exception as exc:  # e.g. rebalancing: the next commit carries the offsets
            logger.info("commit deferred: %s", exc)
            return
        for tp in offsets:
            self.sent[tp.partition] = tp.offset

    def on_commit(self, error: KafkaError | None, offsets: list[TopicPartition]) -> None:
        """The consumer's ``on_commit``: a failed commit is sent again next time. The
        request's ``error`` names one partition's failure; the others carry their own."""
        blamed = any(tp.error is not None for tp in offsets)
        for tp in offsets:
            failed = tp.error if blamed else error
            if failed is not None and self.sent.get(tp.partition) == tp.offset:
                del self.sent[tp.partition]
                logger.info("commit of %s[%d] at %d failed (%s): trying again", tp.topic,
                            tp.partition, tp.offset, failed)

    def forget(self, partition: int) -> None:
        self.sent.pop(partition, None)


def start_offsets(consumer: Consumer, topic: str, partitions: list[int]) -> dict[int, int]:
    """Where each partition's processing starts: its committed offset, else its start. Asked
    for all at once when they are assigned, before any is fetched: a request to the broker
    waits behind a fetch the broker holds (100 ms a partition at start-up, measured)."""
    if not partitions:
        return {}
    tps = [TopicPartition(topic, p) for p in partitions]
    committed = settled(lambda: consumer.committed(tps, timeout=10))
    return {tp.partition: int(tp.offset) if tp.offset >= 0
            else watermarks(consumer, topic, tp.partition, timeout=10)[0] for tp in committed}

