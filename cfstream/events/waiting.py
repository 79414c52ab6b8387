"""Waiting on executions: one events reader per process, shared by ``result()``, ``status()`` and
their asyncio forms, that reads only what the waited-on ids need.

Events are keyed by execution id and placed by murmur2, so the reader knows which partition holds
an id's events without reading the others. It assigns a partition when someone waits on an id in
it, from the id's submit time (UUIDv7 ids carry it), and drops the partition a little after no
one waits there any more. Records of ids no one waits on are not parsed: their keys go into a
fixed-size ring of first offsets (:mod:`cfstream.events.recent`), so a waiter that arrives after
its id's events were read (a deferral's successor, a second waiter) goes back to them, and one
whose id cannot have been read yet goes back nowhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from cfstream.errors import CfStreamError
from cfstream.events.recent import RecentKeys
from cfstream.ids import submitted_ms
from cfstream.kafka.config import consumer_config
from cfstream.kafka.partitioner import partition_for, places_keys_by_murmur2
from cfstream.kafka.retry import offsets_since, settled
from cfstream.kafka.topics import ensure_topics
from cfstream.settings import Settings
from cfstream.wire import EVENT_RANK, event_order

logger = logging.getLogger(__name__)

Event = dict[str, Any]

# How far the clocks of the hosts involved (submitters, processors, workers, this one) may be
# apart: a newly read partition starts this far before a submit time (events are stamped by the
# processors' and workers' clocks), and an id submitted this long before the oldest record the
# ring holds may have been read already. NTP keeps hosts within milliseconds; each second of
# margin costs a second of a partition's traffic read again when a partition is assigned.
CLOCK_MARGIN_MS = 10_000
# Ids that carry no submit time (not UUIDv7) are looked for this far back.
DEFAULT_LOOKBACK_MS = 3_600_000
# Outcomes remembered for ids waited on, so a second waiter or status() needs no re-read.
MAX_REMEMBERED = 100_000
# Records whose keys are remembered per partition (16 bytes each, 2 MiB): at 5k events/s on a
# partition they cover the last 26 s, more than the clock margin, so a new wait on a busy
# partition goes back only to its own id's records.
RECENT_RECORDS = 131_072
# A partition no one waits on is kept this long, so a stream of short waits does not reassign
# (and re-read from a submit time) on every call.
LINGER_S = 5.0
# How long the reader waits for records before it looks at new waiters again.
POLL_WAIT = 0.01
# Records taken per poll once one has arrived.
BATCH = 500
# Delivery failures remembered for waiters that come after them.
MAX_UNDELIVERED = 10_000
# `undelivered` is the waiters' own: the call never reached Kafka.
RANK = {**EVENT_RANK, "undelivered": EVENT_RANK["succeeded"]}
# A waiter is done with an id at its `deferred` event (it follows the successor) or its end.
SETTLED = RANK["deferred"]


@dataclass(eq=False)
class Watch:
    """One wait on one id. ``status`` watches resolve once their partitions have been read up
    to where they ended when asked; the others on the id's deferred or final event."""

    key: bytes
    id: str
    since_ms: int
    status: bool
    resolve: Callable[[Event | None], None]
    partitions: tuple[int, ...] = ()
    targets: dict[int, int] = field(default_factory=dict)
    applied: bool = False
    done: bool = False


@dataclass
class _Partition:
    position: int  # next offset the reader takes
    recent: RecentKeys
    watchers: int = 0
    idle_since: float | None = None


class Waiters:
    """The process's reader of outcomes. ``tick`` runs on the reader's thread between polls
    (the client polls its producer there, so delivery failures reach waiters)."""

    def __init__(self, settings: Settings, tick: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.tick = tick
        self.topic = settings.events_topic
        self.by_murmur2 = places_keys_by_murmur2(settings)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._watches: dict[bytes, list[Watch]] = {}
        self._requests: deque[Watch] = deque()
        self._released: deque[Watch] = deque()
        self._latest: OrderedDict[str, Event] = OrderedDict()
        self._undelivered: OrderedDict[str, str] = OrderedDict()
        self._parts: dict[int, _Partition] = {}
        self._status: list[Watch] = []
        self._partitions = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- waiting ------------------------------------------------------------------------------

    def wait(self, execution_id: str, timeout: float | None,
             after_ms: int | None = None) -> Event | None:
        """The id's ``deferred`` or final event (or ``undelivered``); None if ``timeout``
        seconds pass first. ``after_ms``: the id's outcome comes after then (a successor)."""
        box: list[Event | None] = []
        ready = threading.Event()

        def resolve(event: Event | None) -> None:
            box.append(event)
            ready.set()

        known, watch = self._watch(execution_id, after_ms, False, resolve)
        if watch is None:
            return known
        try:
            return box[0] if ready.wait(timeout) else None
        finally:
            self._release(watch)

    async def wait_async(self, execution_id: str, timeout: float | None,
                         after_ms: int | None = None) -> Event | None:
        """:meth:`wait` for coroutines: the event loop runs on while the reader reads."""
        future, resolve = _future_resolver()
        known, watch = self._watch(execution_id, after_ms, False, resolve)
        if watch is None:
            return known
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            self._release(watch)

    def latest(self, execution_id: str, timeout: float) -> Event | None:
        """The most advanced event of the id, once its partition is read to where it ended
        when asked (or ``timeout`` passed)."""
        ready = threading.Event()
        known, watch = self._watch(execution_id, None, True, lambda _: ready.set())
        assert watch is not None  # noqa: S101 - status watches are always registered
        try:
            ready.wait(timeout)
            return self.known(execution_id)
        finally:
            self._release(watch)

    async def latest_async(self, execution_id: str, timeout: float) -> Event | None:
        future, resolve = _future_resolver()
        _, watch = self._watch(execution_id, None, True, resolve)
        assert watch is not None  # noqa: S101
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            self._release(watch)
        return self.known(execution_id)

    def known(self, execution_id: str) -> Event | None:
        with self._lock:
            return self._latest.get(execution_id)

    def fail(self, execution_id: str, reason: str) -> None:
        """The call never reached Kafka: its waiters get an ``undelivered`` event."""
        event = {"type": "undelivered", "id": execution_id, "reason": reason}
        with self._lock:
            self._undelivered[execution_id] = reason
            if len(self._undelivered) > MAX_UNDELIVERED:
                self._undelivered.popitem(last=False)
            for watch in self._watches.get(execution_id.encode(), []):
                if not watch.status:
                    watch.resolve(event)

    def undelivered(self, execution_id: str) -> str | None:
        with self._lock:
            return self._undelivered.get(execution_id)

    def waiting(self) -> dict[int, int]:
        """Partition -> waits on it, of the partitions being read (for tests and metrics)."""
        with self._lock:
            return {p: state.watchers for p, state in self._parts.items()}

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self, execution_id: str, after_ms: int | None, status: bool,
               resolve: Callable[[Event | None], None]) -> tuple[Event | None, Watch | None]:
        if after_ms is not None:  # a successor: its outcome comes after its predecessor's end
            since = after_ms - CLOCK_MARGIN_MS
        else:
            since = (submitted_ms(execution_id) or int(time.time() * 1000) - DEFAULT_LOOKBACK_MS)
            since -= CLOCK_MARGIN_MS
        with self._lock:
            if self._closed:
                raise CfStreamError("the client was closed; create a new one to wait")
            if not status:
                reason = self._undelivered.get(execution_id)
                if reason is not None:
                    return {"type": "undelivered", "id": execution_id, "reason": reason}, None
                known = self._latest.get(execution_id)
                if known is not None and RANK[known["type"]] >= SETTLED:
                    return known, None
            watch = Watch(execution_id.encode(), execution_id, since, status, resolve)
            self._watches.setdefault(watch.key, []).append(watch)
            self._requests.append(watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="cfstream-waiters",
                                                daemon=True)
                self._thread.start()
        self._wake.set()
        return None, watch

    def _release(self, watch: Watch) -> None:
        with self._lock:
            watch.done = True
            watches = self._watches.get(watch.key)
            if watches is not None and watch in watches:
                watches.remove(watch)
                if not watches:
                    del self._watches[watch.key]
            self._released.append(watch)
        self._wake.set()

    # -- the reader thread --------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed:
            try:
                self._read()
            except (KafkaException, CfStreamError) as exc:  # broker restart, topic electing
                logger.warning("events reader: %s; reconnecting", exc)
                time.sleep(1.0)

    def _read(self) -> None:
        ensure_topics(self.settings)
        consumer = Consumer(consumer_config(self.settings, None))
        try:
            metadata = consumer.list_topics(self.topic, timeout=30).topics[self.topic]
            if metadata.error is not None or not metadata.partitions:
                raise CfStreamError(f"events topic {self.topic}: {metadata.error}")
            with self._lock:
                self._partitions = len(metadata.partitions)
                self._parts.clear()
                self._status.clear()
                # A new consumer starts with nothing assigned: ask again for every wait.
                live = [w for ws in self._watches.values() for w in ws]
                for watch in live:
                    watch.applied = False
                self._requests = deque(live)
                self._released.clear()
            while not self._closed:
                self._serve(consumer)
        finally:
            consumer.close()

    def _serve(self, consumer: Consumer) -> None:
        self._apply(consumer)
        self._drop_idle(consumer)
        if self.tick is not None:
            self.tick()
        if not self._parts:
            self._wake.wait(0.5)
            self._wake.clear()
            return
        first = consumer.poll(POLL_WAIT)
        if first is not None:
            self._take([first])
            self._take(consumer.consume(BATCH, 0))
        self._check_status()

    def _apply(self, consumer: Consumer) -> None:
        """Start reading for new waits; count down for ended ones."""
        while True:
            with self._lock:
                if self._released:
                    watch = self._released.popleft()
                    if watch.applied:
                        watch.applied = False
                        for p in watch.partitions:
                            self._unwatch(p)
                        if watch in self._status:
                            self._status.remove(watch)
                    continue
                if not self._requests:
                    return
                watch = self._requests.popleft()
                if watch.done:
                    continue
                watch.partitions = (
                    (partition_for(watch.key, self._partitions),) if self.by_murmur2
                    else tuple(range(self._partitions)))
            for p in watch.partitions:
                self._want(consumer, p, watch)
            with self._lock:
                watch.applied = True
                if watch.status:
                    self._status.append(watch)

    def _want(self, consumer: Consumer, p: int, watch: Watch) -> None:
        state = self._parts.get(p)
        tp = TopicPartition(self.topic, p)
        if state is None:
            start = self._offset_at(consumer, p, watch.since_ms)
            logger.debug("events partition %d: read from offset %d for %s", p, start, watch.id)
            consumer.incremental_assign([TopicPartition(self.topic, p, start)])
            # Until the ring wraps it holds every record read, which is all stamped since.
            state = _Partition(position=start, recent=RecentKeys(RECENT_RECORDS, watch.since_ms))
            with self._lock:
                self._parts[p] = state
        else:
            first = state.recent.first_offset(watch.key)
            if first is not None:
                if first < state.position:  # read before anyone waited on it
                    self._rewind(consumer, p, state, first)
            elif watch.since_ms < state.recent.complete_since():
                # Submitted before what the ring holds (an old id, or one from another process
                # waited on late): its records may lie before it. Read again from its time.
                start = self._offset_at(consumer, p, watch.since_ms)
                if start < state.position:
                    self._rewind(consumer, p, state, start)
                    state.recent = RecentKeys(RECENT_RECORDS, watch.since_ms)
        if watch.status:
            _, high = settled(lambda: consumer.get_watermark_offsets(tp, timeout=10))
            watch.targets[p] = high
        with self._lock:
            state.watchers += 1
            state.idle_since = None

    def _unwatch(self, p: int) -> None:
        state = self._parts.get(p)
        if state is not None:
            state.watchers -= 1
            if state.watchers <= 0:
                state.idle_since = time.monotonic()

    def _drop_idle(self, consumer: Consumer) -> None:
        now = time.monotonic()
        idle = [p for p, state in self._parts.items()
                if state.idle_since is not None and now - state.idle_since > LINGER_S]
        if idle:
            consumer.incremental_unassign([TopicPartition(self.topic, p) for p in idle])
            with self._lock:
                for p in idle:
                    del self._parts[p]

    def _offset_at(self, consumer: Consumer, p: int, since_ms: int) -> int:
        """The first offset of a record stamped ``since_ms`` or later (the end if none)."""
        return offsets_since(consumer, self.topic, [p], since_ms)[p]

    def _rewind(self, consumer: Consumer, p: int, state: _Partition, offset: int) -> None:
        logger.debug("events partition %d: back from offset %d to %d", p, state.position, offset)
        consumer.incremental_unassign([TopicPartition(self.topic, p)])
        consumer.incremental_assign([TopicPartition(self.topic, p, offset)])
        state.position = offset

    def _take(self, messages: list[Message]) -> None:
        """Note each record's key; parse only those of ids someone waits on."""
        parts, watches = self._parts, self._watches
        for message in messages:
            if message.error() is not None:
                continue
            state = parts.get(message.partition())  # type: ignore[arg-type]
            offset, key = message.offset(), message.key()
            if state is None or offset is None:
                continue  # a partition let go of while its records were on the way
            state.position = offset + 1
            if key is None:
                continue
            state.recent.add(key, offset)
            if key in watches:
                self._deliver(message.value())

    def _deliver(self, raw: bytes | None) -> None:
        try:
            try:
                event = orjson.loads(raw or b"")
            except orjson.JSONDecodeError:
                event = json.loads(raw or b"")  # what orjson refuses (huge integers)
            execution_id, order = event["id"], event_order(event, RANK)
        except (ValueError, KeyError, TypeError):
            return  # not an event of ours; the events topic is not validated here
        with self._lock:
            known = self._latest.get(execution_id)
            if known is None or order >= event_order(known, RANK):
                known = self._latest[execution_id] = event
            self._latest.move_to_end(execution_id)
            if len(self._latest) > MAX_REMEMBERED:
                self._latest.popitem(last=False)
            if RANK[known["type"]] >= SETTLED:
                for watch in self._watches.get(execution_id.encode(), []):
                    if not watch.status:
                        watch.resolve(known)

    def _check_status(self) -> None:
        if not self._status:
            return
        with self._lock:
            for watch in self._status:
                if watch.targets and all(p in self._parts
                                         and self._parts[p].position >= end
                                         for p, end in watch.targets.items()):
                    watch.targets = {}
                    watch.resolve(self._latest.get(watch.id))


def _future_resolver() -> tuple[asyncio.Future[Event | None], Callable[[Event | None], None]]:
    """A future of the running loop, and a function any thread may call to settle it."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Event | None] = loop.create_future()

    def settle(event: Event | None) -> None:
        if not future.done():
            future.set_result(event)

    def resolve(event: Event | None) -> None:
        try:
            loop.call_soon_threadsafe(settle, event)
        except RuntimeError:
            pass  # the loop was closed: no one awaits any more

    return future, resolve
