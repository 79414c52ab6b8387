"""``Execution.cancel`` against the events a processor and a worker would write, on the real
broker: the cancel records it puts on the calls topic, and what it answers, event by event. No
processor runs: each test writes the events itself, in the orders a race can give."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from events_harness import Append, eventually, in_thread

import cfstream as cf
from cfstream.ids import new_execution_id
from cfstream.settings import Settings

pytestmark = pytest.mark.kafka


class Calls:
    """What lands on the calls topic (every partition), read as it comes."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers,
                                  "group.id": "unused", "enable.auto.commit": False})
        self.consumer.assign([TopicPartition(settings.calls_topic, p, 0)
                              for p in range(settings.partitions)])
        self.records: list[tuple[bytes | None, dict[str, Any]]] = []

    def read(self) -> list[tuple[bytes | None, dict[str, Any]]]:
        for message in self.consumer.consume(100, 0.1):
            if message.error() is None:
                self.records.append((message.key(), json.loads(message.value() or b"")))
        return self.records


def test_a_call_that_ran_failed_and_waits_for_its_retry_meanwhile_is_cancelled_again(
        events_settings: Settings, append: Append) -> None:
    """The first cancel comes too late (the call fired); the call fails and waits for its
    retry before cancel() looks again: the retry is cancelled with a second record."""
    client = cf.Client(events_settings)
    calls = Calls(events_settings)
    try:
        call_id = new_execution_id()
        append("scheduled", call_id, defer_key="k1", due_ms=0, submitted_ms=0)
        thread, answer = in_thread(lambda: cf.Execution(call_id, client=client).cancel("no"))
        eventually(lambda: len(calls.read()) == 1)
        key, record = calls.records[0]
        assert key == b"tests:t|k1"
        assert record == {"v": 1, "kind": "cancel", "id": call_id, "reason": "no"}
        append("started", call_id, defer_key="k1")
        append("retrying", call_id, defer_key="k1")  # (before cancel() looks again, or not)
        eventually(lambda: len(calls.read()) == 2)
        assert calls.records[1] == calls.records[0]
        time.sleep(0.3)
        assert len(calls.read()) == 2  # once for the retry, not at every look
        append("cancelled", call_id, defer_key="k1", attempt=2, reason="no")
        thread.join(30)
        assert answer == [True]
    finally:
        calls.consumer.close()
        client.close()


def test_a_call_that_started_first_answers_false_at_once(events_settings: Settings,
                                                         append: Append) -> None:
    client = cf.Client(events_settings)
    calls = Calls(events_settings)
    try:
        call_id = new_execution_id()
        append("scheduled", call_id, defer_key=None, due_ms=0, submitted_ms=0)
        began = time.monotonic()
        thread, answer = in_thread(lambda: cf.Execution(call_id, client=client).cancel())
        eventually(lambda: len(calls.read()) == 1)
        assert calls.records[0][0] == call_id.encode()  # not deferred: keyed by its id
        append("started", call_id, defer_key=None)
        thread.join(30)
        assert answer == [False]
        assert time.monotonic() - began < 10  # not the 30 s timeout
    finally:
        calls.consumer.close()
        client.close()


def test_a_replaced_call_s_cancel_goes_to_the_call_pending_in_its_place(
        events_settings: Settings, append: Append) -> None:
    client = cf.Client(events_settings)
    calls = Calls(events_settings)
    try:
        old, new = new_execution_id(), new_execution_id()
        append("scheduled", new, defer_key="k2", due_ms=0, submitted_ms=0)
        append("deferred", old, defer_key="k2", successor=new, reason="replaced")
        thread, answer = in_thread(lambda: cf.Execution(old, client=client).cancel())
        eventually(lambda: len(calls.read()) == 1)
        assert calls.records[0][1]["id"] == new
        append("cancelled", new, defer_key="k2", reason="cancelled")
        thread.join(30)
        assert answer == [True]
    finally:
        calls.consumer.close()
        client.close()


def test_a_call_with_no_event_times_out_saying_why(events_settings: Settings) -> None:
    client = cf.Client(events_settings)
    try:
        with pytest.raises(TimeoutError, match="has no event within 1.0 s"):
            cf.Execution(new_execution_id(), client=client).cancel(timeout=1.0)
    finally:
        client.close()
