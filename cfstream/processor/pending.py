"""What the processors hold, read from outside: the table's changelog topic is the truth.

``cfstream pending`` replays the compacted changelog (latest value per key wins, tombstones
delete) instead of asking replicas, so it works with any number of replicas, or none running.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from cfstream.codec import dumps
from cfstream.errors import CfStreamError
from cfstream.kafka.config import consumer_config, producer_config
from cfstream.kafka.retry import watermarks
from cfstream.processor import state
from cfstream.settings import Settings
from cfstream.wire import Call, Control


@dataclass(frozen=True, slots=True)
class Pending:
    call: Call
    due_ms: int
    first_ms: int
    running_id: str | None = None  # held until this execution of the key finishes


def pending_calls(settings: Settings, *, task: str | None = None, key: str | None = None,
                  execution_id: str | None = None,
                  progress: Callable[[int, int], None] | None = None) -> list[Pending]:
    """Calls waiting for their due time, soonest first, optionally filtered.

    ``progress(done, total)`` hears after each batch how many changelog offsets are read of
    those between the watermarks (compacted gaps count as read); it ends at ``done == total``.
    """
    topic = settings.changelog_topic
    consumer = Consumer(consumer_config(settings, None))
    slots: dict[bytes, bytes] = {}
    try:
        metadata = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return []  # no processor has run yet
        ends: dict[int, int] = {}
        starts: dict[int, int] = {}
        for p in metadata.partitions:
            low, high = watermarks(consumer, topic, p)
            if high > low:
                starts[p], ends[p] = low, high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        total = sum(ends[p] - starts[p] for p in ends)
        positions = dict(starts)
        while ends:
            for message in consumer.consume(1000, 1.0):
                if message.error() is not None:
                    continue
                raw_key = message.key() or b""
                if raw_key.startswith(state.SLOT_PREFIX):
                    value = message.value()
                    if value is None:
                        slots.pop(raw_key, None)
                    else:
                        slots[raw_key] = value
                offset, partition = message.offset(), message.partition()
                if partition in ends and offset is not None:
                    positions[partition] = min(offset + 1, ends[partition])
                    if offset + 1 >= ends[partition]:
                        del ends[partition]
            if progress is not None:
                progress(sum(positions[p] - starts[p] for p in positions), total)
    finally:
        consumer.close()
    found = []
    for value in slots.values():
        slot = state.decode_slot(value)
        if slot is None or slot.call is None:
            continue
        call = slot.call
        if ((task is None or call.task == task) and (key is None or call.defer_key == key)
                and (execution_id is None or call.id == execution_id)):
            found.append(Pending(call, slot.due_ms, slot.first_ms,
                                 slot.running_id if slot.held else None))
    return sorted(found, key=lambda p: p.due_ms)


def modes(pending: Pending) -> str:
    """The call's deferring modes as shown to people: "leading, keep=first", "collect 3/1000
    calls", "after <id> ends" (held while that execution runs), or ""."""
    call = pending.call
    shown = ["leading"] if call.modes.leading else []
    if call.modes.keep != "last":
        shown.append(f"keep={call.modes.keep}")
    if call.modes.collect is not None:
        shown.append(f"collect {len(call.collected or ())}/{call.modes.collect.max_calls} calls")
    if pending.running_id is not None:
        shown.append(f"after {pending.running_id} ends")
    elif call.modes.if_running != "concurrent":
        shown.append(f"if_running={call.modes.if_running}")
    return ", ".join(shown)


def cancel(settings: Settings, target: Pending, reason: str = "cancelled by operator") -> None:
    """Ask the processor owning ``target``'s key to drop it; waiters then see cancelled."""
    from confluent_kafka import Producer

    producer = Producer(producer_config(settings))
    record = Control(kind="cancel", id=target.call.id, reason=reason).to_dict()
    producer.produce(settings.calls_topic, key=target.call.key.encode(), value=dumps(record))
    if producer.flush(30):
        raise CfStreamError(f"could not publish the cancel for {target.call.id} within 30 s")


def seconds_until(due_ms: int) -> float:
    return (due_ms - time.time() * 1000) / 1000
