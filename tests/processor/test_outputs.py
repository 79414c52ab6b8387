"""A batch's records on the real broker: the changelog goes last, once the broker has the
batch's executions and events (cfstream.processor.outputs)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer

from cfstream.kafka.config import consumer_config
from cfstream.kafka.retry import watermarks
from cfstream.kafka.topics import ensure_topics
from cfstream.processor.outputs import Outputs
from cfstream.settings import Settings


@pytest.fixture
def outputs(settings: Settings) -> Iterator[Outputs]:
    ensure_topics(settings)
    made = Outputs(settings, settings.changelog_topic)
    yield made
    made.close()


@pytest.fixture
def probe(settings: Settings) -> Iterator[Consumer]:
    """A consumer that reads where each partition ends."""
    consumer = Consumer(consumer_config(settings, None))
    yield consumer
    consumer.close()


def end(consumer: Consumer, topic: str, partition: int) -> int:
    return watermarks(consumer, topic, partition)[1]


def test_the_changelog_is_sent_only_once_the_events_are_on_the_broker(
        settings: Settings, outputs: Outputs, probe: Consumer) -> None:
    outputs.produce(settings.changelog_topic, b"s:k", b"slot", 0)
    outputs.produce(settings.events_topic, b"id", b'{"type": "deferred"}', 0)
    # The event goes out on its own; the changelog record waits for the batch's end.
    deadline = time.monotonic() + 10
    while end(probe, settings.events_topic, 0) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert end(probe, settings.events_topic, 0) == 1
    time.sleep(0.2)
    assert end(probe, settings.changelog_topic, 0) == 0
    outputs.end_batch()
    assert outputs.delivered(keep=0) == [{0: 0}]  # the event first, then the changelog
    assert end(probe, settings.changelog_topic, 0) == 1
    assert outputs.delivered(keep=0) == []


def test_batches_are_delivered_in_order_and_none_is_waited_for_unless_asked(
        settings: Settings, outputs: Outputs) -> None:
    for n in range(3):
        outputs.produce(settings.events_topic, f"id{n}".encode(), b'{"type": "deferred"}', 0)
        outputs.produce(settings.changelog_topic, f"s:{n}".encode(), b"slot", 0)
        outputs.end_batch()
    delivered: list[dict[int, int] | None] = []
    deadline = time.monotonic() + 10
    while len(delivered) < 3 and time.monotonic() < deadline:
        started = time.monotonic()
        delivered += outputs.delivered(keep=3)
        assert time.monotonic() - started < 0.5  # (no flush)
        time.sleep(0.005)
    # Batches ready together share a request: the last one's offsets cover them.
    assert len(delivered) == 3 and delivered[-1] == {0: 2}
    offsets = [d[0] for d in delivered if d is not None]
    assert offsets == sorted(offsets)


def test_batches_sent_together_put_only_the_latest_of_a_key_on_the_changelog(
        settings: Settings, outputs: Outputs, probe: Consumer) -> None:
    for value in (b"first", b"second"):
        outputs.produce(settings.changelog_topic, b"s:k", value, 0)
        outputs.end_batch()
    assert outputs.delivered(keep=0) == [None, {0: 0}]
    assert end(probe, settings.changelog_topic, 0) == 1


def test_a_batch_never_ended_leaves_no_changelog_record(
        settings: Settings, outputs: Outputs, probe: Consumer) -> None:
    outputs.produce(settings.changelog_topic, b"s:k", b"slot", 0)
    outputs.close()
    assert end(probe, settings.changelog_topic, 0) == 0
