"""Reading the events topic in order of arrival, for ``cfstream events`` and the demo."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Generator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from cfstream.kafka.config import consumer_config
from cfstream.kafka.retry import offsets_since, partitions, watermarks
from cfstream.kafka.stall import Stall
from cfstream.settings import Settings

logger = logging.getLogger(__name__)


def tail(settings: Settings, *, follow: bool = False, since_ms: int | None = None,
         stop: Callable[[], bool] = lambda: False,
         new_consumer: Callable[[], Consumer] | None = None
         ) -> Generator[dict[str, Any], None, None]:
    """Events as they are read, from ``since_ms`` (default: the beginning). Without ``follow``,
    stops at the end of the topic as it was when reading began."""
    topic = settings.events_topic
    make = new_consumer or (lambda: Consumer(consumer_config(settings, None)))
    consumer = make()
    try:
        parts = partitions(consumer, topic)
        if since_ms is None:
            starts = {p: OFFSET_BEGINNING for p in parts}
        else:
            starts = offsets_since(consumer, topic, parts, since_ms)[0]
        consumer.assign([TopicPartition(topic, p, start) for p, start in starts.items()])

        ends, remaining = {}, set()
        for p in parts:
            low, ends[p] = watermarks(consumer, topic, p)
            first = low if starts[p] == OFFSET_BEGINNING else starts[p]
            if 0 <= first < ends[p]:
                remaining.add(p)
        stall = Stall(topic)  # a follow can stop fetching after a broker restart
        while follow or remaining:
            if stop():
                return
            messages = consumer.consume(500, 0.2)
            if any(message.error() is None for message in messages):
                stall.read()
            elif follow and stall.replace(consumer, starts):
                consumer.close()
                consumer = make()
                partitions(consumer, topic)  # its metadata, before it fetches
                consumer.assign([TopicPartition(topic, p, at) for p, at in starts.items()])
                stall.began()
            for message in messages:
                if message.error() is not None:
                    continue
                offset = message.offset()
                partition = message.partition()
                if partition is not None and offset is not None:
                    starts[partition] = offset + 1
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
        detail = f"-> {short_id(event.get('successor'))} ({event.get('reason', '')})"
    elif kind == "started":
        due = event.get("due_ms")
        detail = f"{(ts - due) / 1000:.3f}s after due" if isinstance(due, int) else ""
    elif kind == "succeeded":
        detail = f"result={json.dumps(event.get('result'))}"
    elif kind == "failed":
        error = event.get("error") or {}
        detail = f"{error.get('type')}: {error.get('message')}"
    elif kind == "retrying":
        error = event.get("error") or {}
        retry_at = event.get("retry_at_ms")
        wait = f" in {(retry_at - ts) / 1000:.3f}s" if isinstance(retry_at, int) else ""
        detail = (f"attempt {event.get('attempt')} {error.get('type')}: {error.get('message')}; "
                  f"attempt {event.get('next_attempt')}{wait}")
    elif kind in ("cancelled", "invalid"):
        detail = str(event.get("reason", ""))
    if isinstance(event.get("attempt"), int) and kind != "retrying":
        detail = f"(attempt {event['attempt']}) {detail}".rstrip()
    key = event.get("defer_key")
    task = str(event.get("task", "")).rsplit(":", 1)[-1]
    return (f"{when}  {kind:<9} {short_id(event.get('id'))}  {task}"
            + (f" [{key}]" if key else "") + (f"  {detail}" if detail else ""))


def short_id(execution_id: object) -> str:
    """The random tail of an id: enough to tell executions apart in a timeline."""
    return str(execution_id)[-8:]
