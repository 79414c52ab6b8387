"""Telling a reader whose assigned consumer stopped fetching from one that has nothing to read.

After a broker restart an assigned consumer can stop fetching for good (librdkafka#5153; the
chaos harness's event follower read nothing for minutes once). A reader that has read nothing
for STALL_S, and finds a partition with records past where it reads, looks again STALL_S later:
if that partition is still where it was, it starts a new consumer there. (Records that came
just before a look and are still on their way are not a stall.) The wait doubles with each new
consumer that reads nothing either, up to STALL_MAX_S.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition

logger = logging.getLogger(__name__)

STALL_S = 10.0
STALL_MAX_S = 120.0
# A reader's thread waits this long at most for a partition's end (the broker may be away).
WATERMARK_TIMEOUT_S = 2.0


class Stall:
    """One reader's watch on its consumer: :meth:`read` after records, :meth:`replace` after
    none, :meth:`began` when it starts a consumer or assigns it partitions."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.wait = STALL_S
        self.last_read = time.monotonic()
        self.behind: dict[int, int] = {}  # partition -> where it was read to, at the last look

    def read(self) -> None:
        """Records came."""
        self.last_read, self.wait, self.behind = time.monotonic(), STALL_S, {}

    def began(self) -> None:
        """A consumer begins, or has new partitions: they get the whole wait."""
        self.last_read, self.behind = time.monotonic(), {}

    def replace(self, consumer: Consumer, reading: Mapping[int, int]) -> bool:
        """Whether to read on with a new consumer: ``reading`` (partition -> next offset) has not
        moved on a partition that had records past it a wait ago, and still has. Asks the
        broker at most once a wait."""
        if time.monotonic() - self.last_read <= self.wait:
            return False
        behind = _behind(consumer, self.topic, reading)
        stalled = [p for p, at in behind.items() if self.behind.get(p) == at]
        self.last_read, self.behind = time.monotonic(), behind
        if not stalled:
            return False
        logger.warning("%s[%s]: nothing read for %.0fs while records lie past %s: reading on "
                       "with a new consumer", self.topic, ",".join(map(str, stalled)),
                       2 * self.wait, ",".join(str(behind[p]) for p in stalled))
        self.wait, self.behind = min(2 * self.wait, STALL_MAX_S), {}
        return True


def _behind(consumer: Consumer, topic: str, reading: Mapping[int, int]) -> dict[int, int]:
    """The partitions with records past ``reading``, and where they are read to."""
    found = {}
    for partition, at in reading.items():
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                       timeout=WATERMARK_TIMEOUT_S)
        except KafkaException:
            return {}  # the broker is away: nothing to tell yet
        at = max(at, low)  # (OFFSET_BEGINNING: nothing read yet)
        if high > at:
            found[partition] = at
    return found
