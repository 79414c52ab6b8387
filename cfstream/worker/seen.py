"""Every event from a time on, for a worker: which executions other workers already began,
merged or finished (redelivered after a crash or a rebalance; see :mod:`cfstream.worker.dedupe`).

The reader is a partition-assigned consumer of every events partition (no group, nothing
committed): executions are keyed by call key, events by execution id, so no partition of one
maps to a partition of the other. It rewinds when asked for events from further back.
(Waiting on executions reads far less: see :mod:`cfstream.events.waiting`.)

A worker's own events are skipped undecoded: it knows what it ran (see
:class:`cfstream.worker.dedupe.Dedupe`), and at full speed they are most of what it reads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from cfstream.clock import CLOCK_MARGIN_MS
from cfstream.codec import dumps, loads
from cfstream.errors import KafkaUnavailable
from cfstream.kafka.config import consumer_config
from cfstream.kafka.retry import offsets_since, partitions, watermarks
from cfstream.kafka.stall import Stall
from cfstream.kafka.topics import ensure_topics
from cfstream.settings import Settings
from cfstream.wire import event_order

logger = logging.getLogger(__name__)

# Executions remembered at once, by their latest event (about 200 bytes each); the oldest go.
MAX_REMEMBERED = 500_000
# What is kept of an event: enough to tell how far its execution went, and where.
FIELDS = ("id", "type", "attempt", "worker")
# How long a waiter sleeps before it rechecks its deadline.
WAKE_INTERVAL = 0.5
# Longest wait for an event before the reader looks for a rewind or close request.
POLL_WAIT = 0.1


def written_by(worker: str) -> Callable[[bytes], bool]:
    """Whether an event's JSON was written by ``worker``: its top-level ``worker`` field names
    it. In JSON text a quote inside a string is escaped, so ``"worker":"<name>"`` is a key and
    its value; it is the top-level one if no object opens before it (the fields before it, up to
    ``ts_ms``, hold none). A ``{`` inside an earlier string only means a false "no", and the
    event is then decoded."""
    field = b'"worker":' + dumps(worker)

    def check(value: bytes) -> bool:
        at = value.find(field)
        return at > 0 and value.find(b"{", 1, at) == -1

    return check


class SeenEvents:
    def __init__(self, settings: Settings, *, max_remembered: int = MAX_REMEMBERED,
                 own: str | None = None) -> None:
        """``own``: the name of the worker this reader serves; its events are skipped."""
        self.settings = settings
        self.max_remembered = max_remembered
        self._own = written_by(own) if own is not None else None
        self._next: dict[int, int] = {}  # partition -> next offset to read
        self._cond = threading.Condition()
        self._latest: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # Events kept so far: whoever reads the same count twice knows nothing changed between.
        self.kept = 0
        self._from_ms: int | None = None  # events since then are read or being read
        self._rewind_to: int | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def known(self, execution_id: str) -> dict[str, Any] | None:
        """The most advanced event read so far for the execution, without waiting."""
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
            ends = {p: watermarks(probe, topic, p)[1] for p in partitions(probe, topic)}
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

    def _need_from(self, since_ms: int) -> bool:
        start = since_ms - CLOCK_MARGIN_MS
        with self._cond:
            rewind = self._from_ms is None or start < self._from_ms
            if rewind:
                self._from_ms = start
                self._rewind_to = start
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
        config = consumer_config(self.settings, None, **{"enable.auto.offset.store": False})
        consumer = Consumer(config)
        try:
            parts = partitions(consumer, topic)
            stall = Stall(topic)  # it can stop fetching after a broker restart
            while True:
                with self._cond:
                    if self._closed:
                        return
                    rewind, self._rewind_to = self._rewind_to, None
                if rewind is not None:
                    self._seek(consumer, topic, parts, rewind)
                    stall.began()
                # poll() returns at the first event; consume(n, t) would hold every event back
                # until n came or t passed, and so sync() with it.
                first = consumer.poll(POLL_WAIT)
                if first is not None:
                    if first.error() is None:
                        stall.read()
                    self._remember([first, *consumer.consume(500, 0)])
                    continue
                with self._cond:
                    reading = dict(self._next)
                if stall.replace(consumer, reading):  # read on from there with a new one
                    consumer.close()
                    consumer = Consumer(config)
                    partitions(consumer, topic)  # its metadata, before it fetches
                    consumer.assign([TopicPartition(topic, p, at) for p, at in reading.items()])
                    stall.began()
        finally:
            consumer.close()

    def _seek(self, consumer: Consumer, topic: str, partitions: list[int],
              since_ms: int) -> None:
        """Assign every partition from ``since_ms``."""
        starts = offsets_since(consumer, topic, partitions, since_ms)[0]
        consumer.assign([TopicPartition(topic, p, start) for p, start in starts.items()])
        with self._cond:
            self._next.update(starts)

    def _remember(self, messages: list[Message]) -> None:
        """Keep the most advanced event of each execution, and where each partition is read
        to (one lock a batch: this thread reads every worker's events)."""
        read: list[tuple[str, tuple[int, int], dict[str, Any]]] = []
        positions: dict[int, int] = {}
        own = self._own
        for message in messages:
            partition, offset = message.partition(), message.offset()
            if message.error() is not None or partition is None or offset is None:
                continue
            positions[partition] = offset + 1
            value = message.value() or b""
            if own is not None and own(value):
                continue
            try:
                event = loads(value)
                read.append((event["id"], event_order(event), event))
            except (ValueError, KeyError, TypeError):
                continue  # not an event of ours; the events topic is not validated here
        with self._cond:
            for partition, position in positions.items():
                self._next[partition] = max(self._next.get(partition, 0), position)
            latest = self._latest
            for execution_id, order, event in read:
                known = latest.get(execution_id)
                if known is None or order >= event_order(known):
                    latest[execution_id] = {k: event[k] for k in FIELDS if k in event}
                    latest.move_to_end(execution_id)
                    self.kept += 1
            while len(latest) > self.max_remembered:
                latest.popitem(last=False)
            self._cond.notify_all()
