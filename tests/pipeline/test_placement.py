"""Keys land where Java clients, aiokafka and faust put them: murmur2, not librdkafka's CRC32."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, TopicPartition, murmur2

import cfstream as cf
from cfstream.kafka.topics import ensure_topics

pytestmark = pytest.mark.kafka


def test_a_keys_calls_land_on_the_partition_murmur2_gives(settings: cf.Settings) -> None:
    ensure_topics(settings)
    client = cf.Client(settings)
    made = [cf.submit("placement:task", [i], defer_key=f"key-{i}", client=client)
            for i in range(40)]
    assert client.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "unused",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(settings.calls_topic, p, 0)
                     for p in range(settings.partitions)])
    seen = {}
    while len(seen) < len(made):
        for message in consumer.consume(100, 5):
            assert message.error() is None
            seen[message.key()] = message.partition()
    consumer.close()
    client.close()
    for key, partition in seen.items():
        assert key.startswith(b"placement:task|key-")
        assert partition == murmur2(key, settings.partitions)
    assert len(set(seen.values())) > 1
