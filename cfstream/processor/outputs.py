"""Everything a replica writes to Kafka, through two librdkafka producers
(:data:`cfstream.kafka.config.PRODUCER_DELIVERY`).

A batch's records are on the broker before its RocksDB writes and its input offsets: a crash
replays input whose effects may already be out (replays are idempotent), never the other way
round. Within the batch, the changelog goes last: its records are sent only once the broker has
the executions, events and dead letters (:meth:`Outputs.send`). The loop waits for them
(:meth:`Outputs.changelog_delivered`) only in its next turn, after that turn's records are
applied, so the changelog's round trip costs the replica no time while calls keep coming. A replica that took over from a changelog record has
every effect of the change it records: a replayed call the state already knows is not acted
on again, so an execution or a ``deferred`` event still in flight when its replica died, with
the changelog record of the same change already out, would be lost (the short chaos test lost
a superseded call's ``deferred`` event so, and with it the call's result).

The changelog's producer reports every delivery (its offsets go into RocksDB); the other one
reports failures only, which saves a Python callback per event (measured: ~1 us each, with
about two events a call).
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
        self.producer = Producer(producer_config(settings, on_delivery=self._delivered,
                                                 **{**options,
                                                    "delivery.report.only.error": True}))
        self.changelog_offsets: dict[int, int] = {}  # partition -> last delivered offset
        self.errors: list[str] = []
        # (key, value, partition): the batch's changelog records, sent by send()
        self._changelog_records: list[tuple[bytes | None, bytes | None, int]] = []

    def produce(self, topic: str, key: bytes | None, value: bytes | None,
                partition: int = -1, headers: list[tuple[str, Any]] | None = None) -> None:
        """Queue a record (``partition`` -1: the key's, by murmur2); a changelog record waits for
        :meth:`send`."""
        if topic == self.changelog_topic:
            self._changelog_records.append((key, value, partition))
            return
        self._send(self.producer, topic, key, value, partition, headers)

    def _send(self, producer: Producer, topic: str, key: bytes | None, value: bytes | None,
              partition: int, headers: list[tuple[str, Any]] | None = None) -> None:
        while True:
            try:
                if headers is None:  # keyword arguments cost the C call a parse
                    producer.produce(topic, value, key, partition)
                else:
                    producer.produce(topic, value, key, partition, headers=headers)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.05)

    def send(self) -> None:
        """Put the executions, events and dead letters produced so far on the broker, then send
        the batch's changelog records without waiting for them (see the module's doc);
        OutputError if the broker refused a record (then no changelog record is sent)."""
        self._wait(self.producer)
        self._raise_errors()
        records, self._changelog_records = self._changelog_records, []
        for key, value, partition in records:
            self._send(self.changelog, self.changelog_topic, key, value, partition)

    def changelog_delivered(self) -> dict[int, int]:
        """Wait until the broker has every changelog record sent; the last offset delivered to
        each partition since the previous call. OutputError if it refused one."""
        self._wait(self.changelog)
        self._raise_errors()
        offsets, self.changelog_offsets = self.changelog_offsets, {}
        return offsets

    @staticmethod
    def _wait(producer: Producer) -> None:
        if len(producer) == 0:
            producer.poll(0)
            return
        while producer.flush(1.0) > 0:
            pass

    def _raise_errors(self) -> None:
        if self.errors:
            errors, self.errors = self.errors, []
            raise OutputError(f"{len(errors)} records refused by the broker, first: {errors[0]}")

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what was sent. A batch's changelog records that :meth:`send` never sent are
        dropped: the batch's input is read again."""
        self._changelog_records.clear()
        left = self.producer.flush(timeout) + self.changelog.flush(timeout)
        if left:
            logger.warning("%d records not delivered at stop; their input is read again", left)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(f"{msg.topic()}[{msg.partition()}]: {err}")
            return
        partition, offset = msg.partition(), msg.offset()
        if msg.topic() == self.changelog_topic and partition is not None and offset is not None:
            # One request in flight: the last delivered has the highest offset.
            self.changelog_offsets[partition] = offset
