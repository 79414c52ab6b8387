"""A raw confluent-kafka group member relaying one topic to another: the failover baseline.

    python -m bench.raw_member BOOTSTRAP SOURCE TARGET GROUP CLIENT_ID

Same membership settings as a processor replica (cooperative-sticky, 6 s session, 1 s
heartbeats). Each relayed record's value is "<source timestamp> <source partition>", so a
reader can tell how late it came through, and from which partition.
"""

from __future__ import annotations

import signal
import sys

from confluent_kafka import Consumer, Producer

from cfstream.kafka.config import HEARTBEAT_INTERVAL_MS
from cfstream.processor.membership import SESSION_TIMEOUT_MS


def main(bootstrap: str, source: str, target: str, group: str, client_id: str) -> None:
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "client.id": client_id,
                         "partition.assignment.strategy": "cooperative-sticky",
                         "session.timeout.ms": SESSION_TIMEOUT_MS,
                         "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
                         "auto.offset.reset": "earliest", "auto.commit.interval.ms": 500})
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
    consumer.subscribe([source])
    while not stopping:
        message = consumer.poll(0.05)
        if message is None or message.error() is not None:
            producer.poll(0)
            continue
        _, ts = message.timestamp()
        producer.produce(target, f"{ts} {message.partition()}".encode(), message.key())
        producer.poll(0)
    consumer.close()
    producer.flush(10)


if __name__ == "__main__":
    main(*sys.argv[1:6])
