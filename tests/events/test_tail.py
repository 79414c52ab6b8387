"""Following the events topic (cfstream.events.tail): a consumer that stops fetching while the
topic grows is replaced where it stood (librdkafka#5153, seen after a broker restart)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from cfstream.events import tail as tail_module
from cfstream.kafka import stall
from cfstream.kafka.config import consumer_config, producer_config
from cfstream.kafka.topics import ensure_topics
from cfstream.settings import Settings


class Stalled(Consumer):
    """Assigned like any consumer; returns the first records it fetches, then never again."""

    def consume(self, *args: Any, **kwargs: Any) -> list[Any]:
        if getattr(self, "stalled", False):
            time.sleep(0.2)
            return []
        messages = super().consume(*args, **kwargs)
        self.stalled = bool(messages)
        return messages


def test_a_follow_that_stopped_fetching_reads_on_with_a_new_consumer(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stall, "STALL_S", 3.0)
    ensure_topics(settings)
    producer = Producer(producer_config(settings))
    producer.produce(settings.events_topic, key=b"k", value=b'{"id": "a", "type": "started"}')
    producer.flush(10)
    made: list[Consumer] = []

    def new_consumer() -> Consumer:
        kind = Stalled if not made else Consumer
        made.append(kind(consumer_config(settings, None)))
        return made[-1]

    began = time.monotonic()
    events = tail_module.tail(settings, follow=True, new_consumer=new_consumer,
                              stop=lambda: time.monotonic() - began > 30)
    first = next(events)
    assert first["id"] == "a"
    # (A new consumer slow to fetch on a loaded machine may itself be replaced, later each time.)
    assert all(type(c) is Consumer for c in made[1:])
    producer.produce(settings.events_topic, key=b"k", value=b'{"id": "b", "type": "started"}')
    producer.flush(10)
    assert next(events)["id"] == "b"  # read on from where the first stood, not again from "a"
    assert type(made[0]) is Stalled and len(made) >= 2
    events.close()


def test_a_quiet_topic_keeps_its_consumer(settings: Settings,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stall, "STALL_S", 0.5)
    ensure_topics(settings)
    made: list[Consumer] = []

    def new_consumer() -> Consumer:
        made.append(Consumer(consumer_config(settings, None)))
        return made[-1]

    began = time.monotonic()
    assert list(tail_module.tail(settings, follow=True, new_consumer=new_consumer,
                                 stop=lambda: time.monotonic() - began > 3)) == []
    assert len(made) == 1
