"""A raw confluent-kafka group member relaying a topic of JSON records: the replicas baseline.

    python -m bench.relay BOOTSTRAP SOURCE TARGET GROUP

Per record what the least processor would do: decode its JSON and produce it on, in batches of
up to 1000 as benchmark 1's raw relay does; runs until SIGTERM. Says ``holds N`` on stdout
whenever the partitions it holds change.
"""

from __future__ import annotations

import json
import signal
import sys

from confluent_kafka import Consumer, Message, Producer, TopicPartition


def forward(messages: list[Message], producer: Producer, target: str) -> int:
    """Decode each record's JSON and produce it to ``target``, waiting for room in a full local
    queue. Returns how many were forwarded (errors are skipped)."""
    forwarded = 0
    for message in messages:
        if message.error() is not None:
            continue
        value = message.value()
        json.loads(value or b"")
        while True:
            try:
                producer.produce(target, value, message.key())
                break
            except BufferError:
                producer.poll(0.01)
        forwarded += 1
    return forwarded


def main(bootstrap: str, source: str, target: str, group: str) -> None:
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "partition.assignment.strategy": "cooperative-sticky",
                         "auto.offset.reset": "earliest"})
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    held: set[int] = set()

    def assigned(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        held.update(tp.partition for tp in partitions)
        print(f"holds {len(held)}", flush=True)  # the harness times from when all hold some

    def revoked(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        held.difference_update(tp.partition for tp in partitions)
        print(f"holds {len(held)}", flush=True)

    consumer.subscribe([source], on_assign=assigned, on_revoke=revoked, on_lost=revoked)
    while not stopping:
        forward(consumer.consume(1000, 0.1), producer, target)
        producer.poll(0)
    consumer.close()
    producer.flush(10)


if __name__ == "__main__":
    main(*sys.argv[1:5])
