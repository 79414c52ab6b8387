"""A batch's records on the real broker: the changelog goes last, once the broker has the
batch's executions and events (cfstream.processor.outputs)."""

from __future__ import annotations

import time

from confluent_kafka import Consumer

from cfstream.kafka.config import consumer_config
from cfstream.kafka.retry import watermarks
from cfstream.kafka.topics import ensure_topics
from cfstream.processor.outputs import Outputs
from cfstream.settings import Settings


def end(consumer: Consumer, topic: str, partition: int) -> int:
    return watermarks(consumer, topic, partition)[1]


def test_the_changelog_is_sent_only_once_the_events_are_on_the_broker(
        settings: Settings) -> None:
    ensure_topics(settings)
    outputs = Outputs(settings, settings.changelog_topic)
    probe = Consumer(consumer_config(settings, None))
    try:
        outputs.produce(settings.changelog_topic, b"s:k", b"slot", 0)
        outputs.produce(settings.events_topic, b"id", b'{"type": "deferred"}', 0)
        # The event goes out on its own (linger: 2 ms); the changelog record waits.
        deadline = time.monotonic() + 10
        while end(probe, settings.events_topic, 0) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert end(probe, settings.events_topic, 0) == 1
        time.sleep(0.2)
        assert end(probe, settings.changelog_topic, 0) == 0
        outputs.send()  # the event is on the broker: the changelog record goes out
        assert outputs.changelog_delivered() == {0: 0}
        assert end(probe, settings.changelog_topic, 0) == 1
        assert outputs.changelog_delivered() == {}  # (since the last call)
    finally:
        probe.close()
        outputs.close()


def test_a_batch_never_sent_leaves_no_changelog_record(settings: Settings) -> None:
    ensure_topics(settings)
    outputs = Outputs(settings, settings.changelog_topic)
    outputs.produce(settings.changelog_topic, b"s:k", b"slot", 0)
    outputs.close()
    probe = Consumer(consumer_config(settings, None))
    try:
        assert end(probe, settings.changelog_topic, 0) == 0
    finally:
        probe.close()
