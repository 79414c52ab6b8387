"""Reading the events topic in order of arrival, for ``cfstream events`` and the demo."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

from cfstream.kafka.config import consumer_config
from cfstream.kafka.retry import settled
from cfstream.settings import Settings


def tail(settings: Settings, *, follow: bool = False, from_beginning: bool = True,
         stop: Callable[[], bool] = lambda: False) -> Iterator[dict[str, Any]]:
    """Events as they are read. Without ``follow``, stops at the end of the topic as of now."""
    topic = settings.events_topic
    consumer = Consumer(consumer_config(settings, None))
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in partitions])
        ends = {p: settled(lambda p=p: consumer.get_watermark_offsets(  # type: ignore[misc]
                    TopicPartition(topic, p), timeout=30))[1] for p in partitions}
        remaining = {p for p, high in ends.items() if high > 0 and from_beginning}
        while follow or remaining:
            if stop():
                return
            for message in consumer.consume(500, 0.2):
                if message.error() is not None:
                    continue
                offset = message.offset()
                partition = message.partition()
                if partition in remaining and offset is not None and offset + 1 >= ends[partition]:
                    remaining.discard(partition)
                try:
                    yield json.loads(message.value() or b"")
                except ValueError:
                    continue
    finally:
        consumer.close()


def matches(event: dict[str, Any], *, task: str | None, key: str | None,
            execution_id: str | None, types: list[str] | None) -> bool:
    return ((task is None or event.get("task") == task)
            and (key is None or event.get("defer_key") == key)
            and (execution_id is None or execution_id in (event.get("id"),
                                                          event.get("successor")))
            and (not types or event.get("type") in types))


def describe(event: dict[str, Any], origin_ms: int | None = None) -> str:
    """One line per event: time, type, execution, task, and what is particular to the type."""
    ts = event.get("ts_ms") or 0
    when = (f"+{(ts - origin_ms) / 1000:7.3f}s" if origin_ms is not None
            else time.strftime("%H:%M:%S", time.localtime(ts / 1000)) + f".{ts % 1000:03d}")
    kind = event.get("type", "?")
    detail = ""
    if kind == "scheduled":
        due = event.get("due_ms")
        detail = f"due in {(due - ts) / 1000:.3f}s" if isinstance(due, int) else ""
    elif kind == "deferred":
        detail = f"-> {str(event.get('successor'))[:13]}… ({event.get('reason', '')})"
    elif kind == "started":
        due = event.get("due_ms")
        detail = f"{(ts - due) / 1000:.3f}s after due" if isinstance(due, int) else ""
    elif kind == "succeeded":
        detail = f"result={json.dumps(event.get('result'))}"
    elif kind == "failed":
        error = event.get("error") or {}
        detail = f"{error.get('type')}: {error.get('message')}"
    elif kind in ("cancelled", "invalid"):
        detail = str(event.get("reason", ""))
    key = event.get("defer_key")
    return (f"{when}  {kind:<9} {str(event.get('id'))[:13]}…  {event.get('task', '')}"
            + (f" [{key}]" if key else "") + (f"  {detail}" if detail else ""))
