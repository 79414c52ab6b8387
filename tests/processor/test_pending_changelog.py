"""Reading the pending calls from the changelog (cfstream.processor.pending), on the broker."""

from __future__ import annotations

from dataclasses import replace

import pytest
from confluent_kafka import Producer

from cfstream.kafka.config import producer_config
from cfstream.kafka.topics import ensure_topics
from cfstream.processor import state
from cfstream.processor.pending import pending_calls
from cfstream.scheduling.rules import Slot
from cfstream.settings import Settings
from cfstream.wire import Call

pytestmark = pytest.mark.kafka

WRITES_PER_PARTITION = 1500
KEYS_PER_PARTITION = 50


def slot(key: str, due: int) -> bytes:
    call = Call(id=f"id-{key}-{due}", task="t", args=[], kwargs={}, submitted_ms=due,
                defer_key=key)
    return state.encode_slot(Slot(call=call, first_ms=due, due_ms=due))


def test_pending_reports_progress_up_to_the_changelog_end(settings: Settings) -> None:
    settings = replace(settings, partitions=2)
    ensure_topics(settings)
    producer = Producer(producer_config(settings))
    latest: dict[str, int] = {}
    for partition in (0, 1):
        for i in range(WRITES_PER_PARTITION):
            key = f"p{partition}-k{i % KEYS_PER_PARTITION}"
            producer.produce(settings.changelog_topic, slot(key, i),
                             state.slot_key(key.encode()), partition=partition)
            latest[key] = i
        for i in range(10):  # tombstones: these keys fired or were cancelled
            key = f"p{partition}-k{i}"
            producer.produce(settings.changelog_topic, None,
                             state.slot_key(key.encode()), partition=partition)
            del latest[key]
    assert producer.flush(30) == 0
    total = 2 * (WRITES_PER_PARTITION + 10)

    reports: list[tuple[int, int]] = []
    found = pending_calls(settings, progress=lambda done, of: reports.append((done, of)))

    assert {p.call.defer_key: p.due_ms for p in found} == latest
    assert len(reports) >= total // 1000, "a report per batch of at most 1000 records"
    assert {of for _, of in reports} == {total}
    done = [d for d, _ in reports]
    assert done == sorted(done) and done[0] < total and done[-1] == total
