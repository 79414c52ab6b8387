"""A worker's events reader (cfstream.worker.seen): it skips the worker's own events undecoded,
and only those."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Producer

from cfstream.calls import new_call
from cfstream.clock import now_ms
from cfstream.codec import dumps
from cfstream.kafka.config import producer_config
from cfstream.kafka.topics import ensure_topics
from cfstream.settings import Settings
from cfstream.wire import event
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
    finally:
        seen.close()
