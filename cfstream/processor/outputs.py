"""Everything a replica writes to Kafka: the changelog through one idempotent producer, the
rest (executions, events, dead letters) through two that take turns.

A turn's records must all be on the broker before its RocksDB writes and its input offsets: a
crash replays input whose effects may already be out (replays are idempotent), never the other
way round. A replica does not wait for them at the end of the turn, though. It goes on to the
next turn while they travel, and settles them at the end of that next turn (a whole turn later,
they are usually there): the next turn's executions and events go out through the other producer,
so settling the last turn never waits for this one's (measured, bench/mixed: the flush at the end
of each turn took 20-100 ms with a submitter and a worker on the machine, and fires waited
behind it). The changelog has one producer, so that a key's changelog records stay in order; at
settling time it holds only the last turn's records.

The changelog's producer reports every delivery (its offsets go into RocksDB); the others report
failures only, which saves a Python callback per event (measured: ~1 us each, with about two
events a call).
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from cfstream.errors import CfStreamError
from cfstream.kafka.config import producer_config
from cfstream.settings import Settings

logger = logging.getLogger(__name__)

# Records wait this long for more to share a request; a flush sends at once.
LINGER_MS = 2


class OutputError(CfStreamError):
    """The broker refused a record for good; the replica stops without committing its input."""


class Outputs:
    """Every record a replica writes; remembers the changelog offsets delivered."""

    def __init__(self, settings: Settings, changelog_topic: str) -> None:
        self.changelog_topic = changelog_topic
        # A broker outage holds records until it is back, never drops them.
        options = {"message.timeout.ms": 0, "linger.ms": LINGER_MS}
        self.changelog = Producer(producer_config(settings, on_delivery=self._delivered,
                                                  **options))
        self.turns = [Producer(producer_config(settings, on_delivery=self._delivered,
                                               **{**options, "delivery.report.only.error": True}))
                      for _ in range(2)]
        self.producer = self.turns[0]  # this turn's
        self.changelog_offsets: dict[int, int] = {}  # partition -> last delivered offset
        self.errors: list[str] = []

    def produce(self, topic: str, key: bytes | None, value: bytes | None,
                partition: int = -1, headers: list[tuple[str, Any]] | None = None) -> None:
        """Queue a record (``partition`` -1: the key's, by murmur2)."""
        producer = self.changelog if topic == self.changelog_topic else self.producer
        while True:
            try:
                if headers is None:  # keyword arguments cost the C call a parse
                    producer.produce(topic, value, key, partition)
                else:
                    producer.produce(topic, value, key, partition, headers=headers)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.05)

    def settle(self) -> None:
        """Wait until the last turn's records are on the broker (those of the turn before it
        and the changelog: call it before staging this turn's changelog records); OutputError if
        one was refused."""
        last = self.turns[1] if self.producer is self.turns[0] else self.turns[0]
        for producer in (last, self.changelog):
            _drain(producer)
        self.producer.poll(0)  # this turn's failures, if any came back already
        self._raise_errors()

    def seal(self) -> None:
        """This turn's records are all produced: the next turn's go through the other producer
        (settled, so empty)."""
        self.producer = self.turns[1] if self.producer is self.turns[0] else self.turns[0]

    def flush(self) -> None:
        """Wait until everything produced so far is on the broker; OutputError if refused."""
        for producer in (*self.turns, self.changelog):
            _drain(producer)
        self._raise_errors()

    def take_changelog_offsets(self) -> dict[int, int]:
        offsets, self.changelog_offsets = self.changelog_offsets, {}
        return offsets

    def close(self, timeout: float = 10.0) -> None:
        left = sum(producer.flush(timeout) for producer in (*self.turns, self.changelog))
        if left:
            logger.warning("%d records not delivered at stop; their input is read again", left)

    def _raise_errors(self) -> None:
        if self.errors:
            errors, self.errors = self.errors, []
            raise OutputError(f"{len(errors)} records refused by the broker, first: {errors[0]}")

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(f"{msg.topic()}[{msg.partition()}]: {err}")
            return
        partition, offset = msg.partition(), msg.offset()
        if msg.topic() == self.changelog_topic and partition is not None and offset is not None:
            # In order within a partition (idempotent producer): the last is the highest.
            self.changelog_offsets[partition] = offset


def _drain(producer: Producer) -> None:
    if len(producer) == 0:
        producer.poll(0)
        return
    while producer.flush(1.0) > 0:
        pass
