"""A raw confluent-kafka group member relaying one topic to another: the failover baseline.

    python -m bench.raw_member BOOTSTRAP SOURCE TARGET GROUP CLIENT_ID [INSTANCE_ID [leave|stay]]

Same membership settings as a processor replica (cooperative-sticky, 6 s session, 1 s
heartbeats). Each relayed record's value is "<source timestamp> <source partition>", so a
reader can tell how late it came through, and from which partition.

With INSTANCE_ID it is a static member, and SIGTERM goes the way a static processor replica's
does (cfstream.processor.membership): ``leave`` (default) unsubscribes and serves the revoke
before closing, so its partitions move at once; ``stay`` only closes, so the group keeps them
for a restart within the session.
"""

from __future__ import annotations

import signal
import sys
import time

from confluent_kafka import Consumer, Message, Producer

from cfstream.kafka.config import HEARTBEAT_INTERVAL_MS
from cfstream.processor.membership import LEAVE_POLL, REVOKE_TIMEOUT, SESSION_TIMEOUT_MS


def main(bootstrap: str, source: str, target: str, group: str, client_id: str,
         instance_id: str = "", on_stop: str = "leave") -> None:
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    config = {"bootstrap.servers": bootstrap, "group.id": group, "client.id": client_id,
              "partition.assignment.strategy": "cooperative-sticky",
              "session.timeout.ms": SESSION_TIMEOUT_MS,
              "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
              "auto.offset.reset": "earliest", "auto.commit.interval.ms": 500}
    if instance_id:
        config["group.instance.id"] = instance_id
    consumer = Consumer(config)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})

    def relay(message: Message | None) -> None:
        # Every record poll() returns is relayed: its offset is stored for the next commit.
        if message is not None and message.error() is None:
            _, ts = message.timestamp()
            producer.produce(target, f"{ts} {message.partition()}".encode(), message.key())
        producer.poll(0)

    consumer.subscribe([source])
    while not stopping:
        relay(consumer.poll(0.05))
    if instance_id and on_stop == "leave":  # close() alone never leaves for a static member
        consumer.unsubscribe()
        deadline = time.monotonic() + REVOKE_TIMEOUT
        while consumer.assignment() and time.monotonic() < deadline:
            relay(consumer.poll(LEAVE_POLL))
    consumer.close()
    producer.flush(10)


if __name__ == "__main__":
    main(*sys.argv[1:8])
