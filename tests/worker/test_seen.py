"""A worker's events reader (cfstream.worker.seen): it skips the worker's own events undecoded,
and only those; a consumer that stops fetching is replaced where it stood."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from stalls import Stalls, first_stalls

from cfstream.calls import new_call
from cfstream.clock import now_ms
from cfstream.codec import dumps
from cfstream.kafka import stall
from cfstream.kafka.config import producer_config
from cfstream.kafka.topics import ensure_topics
from cfstream.settings import Settings
from cfstream.wire import event
from cfstream.worker import seen as seen_module
from cfstream.worker.seen import SeenEvents, written_by

ME, OTHER = "host-a:101", "host-b:202"
NOW = 1_800_000_000_000


def events_of(worker: str, **extra: Any) -> list[bytes]:
    """What a worker writes for a call it runs, retries and runs again."""
    call = new_call("tasks:send", {"id": 1}, {}, delay_ms=0, defer_key=None, max_wait_ms=None)
    return [dumps(event(kind, call, NOW, worker=worker, **extra))
            for kind in ("started", "succeeded", "failed", "retrying")]


def test_the_workers_own_events_are_told_by_their_top_level_field() -> None:
    mine = written_by(ME)
    assert all(mine(value) for value in events_of(ME))
    assert all(mine(value) for value in events_of(ME, result={"worker": OTHER}))
    assert not any(mine(value) for value in events_of(OTHER))
    # Another worker's run that returned this worker's name: the field is not top-level.
    assert not any(mine(value) for value in events_of(OTHER, result={"worker": ME}))
    assert not any(mine(value) for value in events_of(OTHER, result=[{"worker": ME}]))
    # A string holding the text: its quotes are escaped.
    assert not any(mine(value) for value in events_of(OTHER, result=f'"worker":"{ME}"'))
    # Events no worker signs (the processor's; a backlog merge's).
    call = new_call("tasks:send", {}, {}, delay_ms=0, defer_key="{k}", max_wait_ms=None)
    assert not mine(dumps(event("deferred", call, NOW, successor="x", reason="backlog")))
    assert not mine(dumps(event("scheduled", call, NOW)))


def test_a_reader_skips_its_own_workers_events(settings: Settings) -> None:
    ensure_topics(settings)
    call = new_call("tasks:send", {}, {}, delay_ms=0, defer_key=None, max_wait_ms=None)
    theirs = new_call("tasks:send", {}, {}, delay_ms=0, defer_key=None, max_wait_ms=None)
    producer = Producer(producer_config(settings))
    for worker, about in ((ME, call), (OTHER, theirs)):
        value = dumps(event("started", about, NOW, worker=worker))
        producer.produce(settings.events_topic, key=about.id.encode(), value=value)
    producer.flush(10)
    seen = SeenEvents(settings, own=ME)
    try:
        seen.read_since(now_ms() - 60_000)  # the records are stamped when produced
        assert seen.sync(timeout=30)
        assert seen.known(theirs.id) == {"id": theirs.id, "type": "started", "worker": OTHER}
        assert seen.known(call.id) is None
        assert seen.kept == 1  # what a worker's queued jobs are checked again by
    finally:
        seen.close()


def test_a_reader_that_stopped_fetching_reads_on_with_a_new_consumer(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stall, "STALL_S", 1.0)
    made: list[Consumer] = []
    monkeypatch.setattr(seen_module, "Consumer", first_stalls(made))
    ensure_topics(settings)
    producer = Producer(producer_config(settings))
    first, second = (new_call("tasks:send", {}, {}, delay_ms=0, defer_key=None,
                              max_wait_ms=None) for _ in range(2))

    def publish(call: Any) -> None:
        producer.produce(settings.events_topic, key=call.id.encode(),
                         value=dumps(event("started", call, NOW, worker=OTHER)))
        producer.flush(10)

    def known_within(execution_id: str, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while seen.known(execution_id) is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    publish(first)
    seen = SeenEvents(settings, own=ME)
    try:
        seen.read_since(now_ms() - 60_000)
        assert known_within(first.id, 30)
        publish(second)
        assert known_within(second.id, 30)  # read by a new consumer, from where the first stood
        assert type(made[0]) is Stalls and made[0].stalled and len(made) >= 2
        assert all(type(c) is Consumer for c in made[1:])
    finally:
        seen.close()
