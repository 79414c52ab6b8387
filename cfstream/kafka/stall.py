"""Telling a reader whose assigned consumer stopped fetching from one that has nothing to read.

After a broker restart an assigned consumer can stop fetching for good (librdkafka#5153; the
chaos harness's event follower read nothing for minutes once). A reader that has read nothing
for STALL_S while a partition has records past where it reads starts a new consumer there. The
wait doubles with each new consumer that reads nothing either, up to STALL_MAX_S.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition

logger = logging.getLogger(__name__)

STALL_S = 10.0
STALL_MAX_S = 120.0


class Stall:
    """One reader's watch on its consumer: :meth:`read` after records, :meth:`replace` after
    none."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.wait = STALL_S
        self.last_read = time.monotonic()

    def read(self) -> None:
        self.last_read, self.wait = time.monotonic(), STALL_S

    def replace(self, consumer: Consumer, reading: Mapping[int, int]) -> bool:
        """Whether to read on with a new consumer: nothing read for the wait, and a partition
        has records past ``reading`` (partition -> next offset). Asks the broker at most once
        a wait."""
        if time.monotonic() - self.last_read <= self.wait:
            return False
        behind = _behind(consumer, self.topic, reading, self.wait)
        if behind:
            self.wait = min(2 * self.wait, STALL_MAX_S)
        self.last_read = time.monotonic()
        return behind


def _behind(consumer: Consumer, topic: str, reading: Mapping[int, int],
            stalled_s: float) -> bool:
    """Whether a partition has records past ``reading``; logged."""
    for partition, at in reading.items():
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
        except KafkaException:
            return False  # the broker is away: nothing to tell yet
        at = max(at, low)  # (OFFSET_BEGINNING: nothing read yet)
        if high > at:
            logger.warning("%s[%d]: nothing read for %.0fs while it ends at %d, past %d: reading "
                           "on with a new consumer", topic, partition, stalled_s, high, at)
            return True
    return False
