"""The real broker works the way cfstream uses it: keyed round trips and compacted topics."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer, murmur2
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

pytestmark = pytest.mark.kafka


def test_round_trip(kafka_bootstrap: str, topic_prefix: str, admin: AdminClient,
                    create_topics) -> None:
    topic = f"{topic_prefix}.calls"
    create_topics(admin, [topic], 4)
    producer = Producer({"bootstrap.servers": kafka_bootstrap,
                         "partitioner": "murmur2_random", "enable.idempotence": True})
    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(20)}
    for key, value in sent.items():
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": topic_prefix,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    received: dict[bytes, tuple[bytes, int]] = {}
    try:
        for _ in range(60):
            msg = consumer.poll(1.0)
            if msg is None:
                if len(received) == len(sent):
                    break
                continue
            assert msg.error() is None, msg.error()
            received[msg.key()] = (msg.value(), msg.partition())
            if len(received) == len(sent):
                break
    finally:
        consumer.close()
    assert {k: v for k, (v, _) in received.items()} == sent
    # Keys land where Java clients and Faust (murmur2) put them.
    for key, (_, partition) in received.items():
        assert partition == murmur2(key, 4)


def test_compacted_topic(topic_prefix: str, admin: AdminClient, create_topics) -> None:
    topic = f"{topic_prefix}.state-{uuid.uuid4().hex[:6]}"
    create_topics(admin, [topic], 6, {"cleanup.policy": "compact"})

    metadata = admin.list_topics(topic, timeout=10)
    assert len(metadata.topics[topic].partitions) == 6
    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["cleanup.policy"].value == "compact"
