"""One events-topic reader per process, shared by every ``Execution.result()`` and ``status()``.

The reader is a partition-assigned consumer (no group, nothing committed). It starts at the
submit time of the first execution waited on (UUIDv7 ids carry it) and rewinds when a waiter needs
older events, so an ``Execution`` rebuilt from an id in another process finds events from before
the reader existed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from cfstream.errors import KafkaUnavailable
from cfstream.ids import submitted_ms
from cfstream.kafka.config import consumer_config
from cfstream.kafka.retry import settled
from cfstream.kafka.topics import ensure_topics
from cfstream.settings import Settings
from cfstream.wire import TERMINAL_EVENTS

logger = logging.getLogger(__name__)

# Events are stamped by other machines' clocks; read this far before a submit time.
CLOCK_MARGIN_MS = 60_000
# Ids that carry no submit time (not UUIDv7) are looked for this far back.
DEFAULT_LOOKBACK_MS = 3_600_000
# Executions remembered at once (their latest event); older ones are re-read if asked for again.
MAX_REMEMBERED = 100_000
# How long a waiter sleeps before it rechecks its deadline.
WAKE_INTERVAL = 0.5
# Longest wait for an event before the reader looks for a rewind or close request.
POLL_WAIT = 0.1
_RANK = {"scheduled": 0, "started": 1, "deferred": 2, "invalid": 3,
         **{name: 3 for name in TERMINAL_EVENTS}}


class EventReader:
    """``fields`` keeps only those fields of each event (and its id and type), to remember more
    executions in less memory."""

    def __init__(self, settings: Settings, *, max_remembered: int = MAX_REMEMBERED,
                 fields: tuple[str, ...] | None = None) -> None:
        self.settings = settings
        self.max_remembered = max_remembered
        self.fields = None if fields is None else ("id", "type", *fields)
        self._next: dict[int, int] = {}  # partition -> next offset to read
        self._cond = threading.Condition()
        self._latest: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._from_ms: int | None = None  # events since then are read or being read
        self._rewind_to: int | None = None
        self._caught_up = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def wait(self, execution_id: str, deadline: float | None) -> dict[str, Any] | None:
        """The execution's ``deferred`` or final event; None if ``deadline`` passes first."""
        self._need(execution_id)
        with self._cond:
            while True:
                event = self._latest.get(execution_id)
                if event is not None and _RANK[event["type"]] >= _RANK["deferred"]:
                    return event
                if deadline is None:
                    self._cond.wait(WAKE_INTERVAL)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(min(remaining, WAKE_INTERVAL))

    def known(self, execution_id: str) -> dict[str, Any] | None:
        """The most advanced event read so far for the execution, without waiting."""
        with self._cond:
            return self._latest.get(execution_id)

    def latest(self, execution_id: str, timeout: float) -> dict[str, Any] | None:
        """The most advanced event known for the execution, once the reader has caught up."""
        self._need(execution_id)
        self._caught_up.wait(timeout)
        with self._cond:
            return self._latest.get(execution_id)

    def read_since(self, since_ms: int) -> bool:
        """Make sure events from ``since_ms`` on are (being) read; True if that meant reading
        further back than before (a :meth:`sync` done earlier does not cover them)."""
        return self._need_from(since_ms)

    def sync(self, timeout: float) -> bool:
        """Wait until every event published before this call has been read."""
        topic = self.settings.events_topic
        probe = Consumer(consumer_config(self.settings, None))
        try:
            partitions = probe.list_topics(topic, timeout=30).topics[topic].partitions
            ends = {p: settled(lambda p=p: probe.get_watermark_offsets(  # type: ignore[misc]
                TopicPartition(topic, p), timeout=30))[1] for p in partitions}
        finally:
            probe.close()
        deadline = time.monotonic() + timeout
        with self._cond:
            while any(self._next.get(p, -1) < end for p, end in ends.items() if end > 0):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, WAKE_INTERVAL))
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _need(self, execution_id: str) -> None:
        since = submitted_ms(execution_id) or int(time.time() * 1000) - DEFAULT_LOOKBACK_MS
        self._need_from(since)

    def _need_from(self, since_ms: int) -> bool:
        start = since_ms - CLOCK_MARGIN_MS
        with self._cond:
            rewind = self._from_ms is None or start < self._from_ms
            if rewind:
                self._from_ms = start
                self._rewind_to = start
                self._caught_up.clear()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="cfstream-events",
                                                daemon=True)
                self._thread.start()
            return rewind

    def _run(self) -> None:
        while not self._closed:
            try:
                self._read()
            except (KafkaException, KafkaUnavailable) as exc:  # broker restart, topic electing
                logger.warning("event reader: %s; reconnecting", exc)
                with self._cond:
                    self._rewind_to = self._from_ms  # re-read: events may have been missed
                time.sleep(1.0)

    def _read(self) -> None:
        ensure_topics(self.settings)
        topic = self.settings.events_topic
        consumer = Consumer(consumer_config(self.settings, None, **{"enable.auto.offset.store": False}))
        try:
            partitions = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
            targets: dict[int, int] = {}
            while True:
                with self._cond:
                    if self._closed:
                        return
                    rewind, self._rewind_to = self._rewind_to, None
                if rewind is not None:
                    targets = self._seek(consumer, topic, partitions, rewind)
                # poll() returns at the first event; consume(n, t) would hold every event back
                # until n came or t passed, and so every waiter and sync() with it.
                first = consumer.poll(POLL_WAIT)
                for message in [] if first is None else [first, *consumer.consume(500, 0)]:
                    if message.error() is None:
                        self._remember(message.value(), message.partition(), message.offset())
                if not self._caught_up.is_set():
                    positions = consumer.position([TopicPartition(topic, p) for p in targets])
                    if all(tp.offset >= targets[tp.partition] for tp in positions):
                        self._caught_up.set()
        finally:
            consumer.close()

    def _seek(self, consumer: Consumer, topic: str, partitions: list[int],
              since_ms: int) -> dict[int, int]:
        """Assign every partition from ``since_ms``; return the offsets that mean 'caught up'."""
        wanted = [TopicPartition(topic, p, since_ms) for p in partitions]
        found = settled(lambda: consumer.offsets_for_times(wanted, timeout=30))
        consumer.assign([TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0
                                        else OFFSET_END) for tp in found])
        targets = {}
        for tp in found:
            _, high = settled(lambda tp=tp: consumer.get_watermark_offsets(  # type: ignore[misc]
                TopicPartition(topic, tp.partition), timeout=30))
            with self._cond:
                self._next[tp.partition] = tp.offset if tp.offset >= 0 else high
            if 0 <= tp.offset < high:
                targets[tp.partition] = high
        if not targets:
            self._caught_up.set()
        return targets

    def _remember(self, raw: bytes | None, partition: int | None, offset: int | None) -> None:
        try:
            event = json.loads(raw or b"")
            execution_id, kind = event["id"], event["type"]
            rank = _RANK[kind]
        except (ValueError, KeyError, TypeError):
            event = None  # not an event of ours; the events topic is not validated here
        with self._cond:
            if partition is not None and offset is not None:
                self._next[partition] = max(self._next.get(partition, 0), offset + 1)
            if event is not None:
                known = self._latest.get(execution_id)
                if known is None or rank >= _RANK[known["type"]]:
                    if self.fields is not None:
                        event = {k: event[k] for k in self.fields if k in event}
                    self._latest[execution_id] = event
                    self._latest.move_to_end(execution_id)
                    if len(self._latest) > self.max_remembered:
                        self._latest.popitem(last=False)
            self._cond.notify_all()
