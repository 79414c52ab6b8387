"""Waiting on executions: one events reader per process, shared by ``result()``, ``status()``,
``cf.wait()`` and their asyncio forms, that reads only the partitions the waited-on ids map to.

Events are keyed by execution id and placed by murmur2, so the reader knows which partition holds
an id's events without reading the others. A wait on an id in a partition no one waited on yet
starts two reads: the tail, from the partition's end on, and a look back over what came since
the id was submitted (UUIDv7 ids carry the time). Every record read is noted in a bounded memory
(:mod:`cfstream.events.known`), so a later wait on an id whose outcome was read (a loop over
results, a deferral's successor, a second waiter, ``status()``) is answered without Kafka, and a
wait on an id from before what the partition's reads cover looks back over just that stretch
(:mod:`cfstream.events.history`). A partition no one waits on is let go a little later.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from cfstream.codec import loads
from cfstream.errors import CfStreamError
from cfstream.events.history import FETCH_WAIT_MS, History
from cfstream.events.known import RANK, SETTLED, Event, Known, KnownEvents
from cfstream.ids import submitted_ms
from cfstream.kafka.config import consumer_config
from cfstream.kafka.partitioner import partition_for, places_keys_by_murmur2
from cfstream.kafka.retry import offsets_since, settled
from cfstream.kafka.topics import ensure_topics
from cfstream.settings import Settings

logger = logging.getLogger(__name__)

# How far the clocks of the hosts involved (submitters, processors, workers, this one) may be
# apart: a read for an id starts this far before its submit time (events are stamped by the
# processors' and workers' clocks). NTP keeps hosts within milliseconds; each second of margin
# costs a second of a partition's traffic read when a partition is first read.
CLOCK_MARGIN_MS = 10_000
# Ids that carry no submit time (not UUIDv7) are looked for this far back.
DEFAULT_LOOKBACK_MS = 3_600_000
# Ids whose latest event is remembered (a few hundred bytes each; at most known.MAX_BYTES of
# records in all): a process can collect this many results after the fact without reading them
# again.
MAX_REMEMBERED = 100_000
# A partition no one waits on is kept this long, so a stream of short waits does not start a
# new read on every call.
LINGER_S = 5.0
# The broker's longest wait for new records of the tail. A partition added to the tail is
# fetched only when the poll in flight returns, so this bounds how late the first records of a
# newly waited-on partition can come; librdkafka's 500 ms default would let them wait that long.
TAIL_FETCH_WAIT_MS = 100
# How often the reader looks for partitions to let go of.
IDLE_CHECK_S = 0.5
# How long the reader waits for records before it looks at new waiters again.
POLL_WAIT = 0.01
# The same while a look back is read or waits come one after another: short, so that the next
# wait is taken up soon.
BRISK_POLL_WAIT = 0.001
BRISK_S = 1.0
# Records taken per poll once one has arrived.
BATCH = 500
# Delivery failures remembered for waiters that come after them.
MAX_UNDELIVERED = 10_000

Resolve = Callable[[Event | None], None]


@dataclass(eq=False)
class Watch:
    """One wait on one id. A status watch resolves once the id's partitions have been read up to
    where they ended when it was made; the others at the id's deferred or final event."""

    id: str
    since_ms: int
    status: bool
    resolve: Resolve
    partitions: tuple[int, ...] = ()
    targets: dict[int, int] = field(default_factory=dict)
    asked: float = field(default_factory=time.monotonic)
    resolved: bool = False  # set under the reader's lock: a watch is resolved once
    applied: bool = False
    done: bool = False


@dataclass
class _Reads:
    """The reader's consumers: the tail of the partitions waited on (long polls, little CPU),
    the history below it, and one that only asks for offsets (a broker answers a connection's
    requests in turn, so a question on a consumer in a long poll waits out the poll)."""

    tail: Consumer
    history: History
    offsets: Consumer


@dataclass
class _Partition:
    """What the reader reads of one partition: every record from ``lo`` on (the tail from where
    it began, the history below), which covers ids submitted since ``since_ms``."""

    since_ms: int
    lo: int
    position: int  # the tail's next offset
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    watchers: int = 0
    idle_since: float | None = None


class Waiters:
    """The process's reader of outcomes. ``tick`` runs on the reader's thread between polls
    (the client polls its producer there, so delivery failures reach waiters)."""

    def __init__(self, settings: Settings, tick: Callable[[], None] | None = None,
                 remember: int = MAX_REMEMBERED) -> None:
        self.settings = settings
        self.tick = tick
        self.topic = settings.events_topic
        self.by_murmur2 = places_keys_by_murmur2(settings)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._known = KnownEvents(remember)
        self._watches: dict[str, list[Watch]] = {}
        self._requests: deque[Watch] = deque()
        self._released: deque[Watch] = deque()
        self._undelivered: dict[str, str] = {}
        self._parts: dict[int, _Partition] = {}
        self._status: set[Watch] = set()
        self._partitions = 0
        self._brisk_until = 0.0
        self._next_idle_check = 0.0
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- waiting ------------------------------------------------------------------------------

    def watch(self, execution_id: str, after_ms: int | None,
              resolve: Resolve) -> tuple[Event, None] | tuple[None, Watch]:
        """The id's ``deferred`` or final event (or ``undelivered``) if it is known, else a watch
        that calls ``resolve`` with it from the reader's thread. ``after_ms``: the id's outcome
        comes after then (a successor). :meth:`release` the watch when done with it."""
        return self._watch(execution_id, after_ms, False, resolve)

    def wait(self, execution_id: str, timeout: float | None,
             after_ms: int | None = None) -> Event | None:
        """The id's ``deferred`` or final event (or ``undelivered``); None if ``timeout``
        seconds pass first."""
        settled = self.known(execution_id, settled=True)
        if settled is not None:
            return settled
        box: list[Event | None] = []
        ready = threading.Event()

        def resolve(event: Event | None) -> None:
            box.append(event)
            ready.set()

        known, watch = self._watch(execution_id, after_ms, False, resolve)
        if watch is None:
            return known
        try:
            event = box[0] if ready.wait(timeout) else None
        finally:
            self.release(watch)
        self._check_open()
        return event

    async def wait_async(self, execution_id: str, timeout: float | None,
                         after_ms: int | None = None) -> Event | None:
        """:meth:`wait` for coroutines: the event loop runs on while the reader reads."""
        settled = self.known(execution_id, settled=True)
        if settled is not None:
            return settled
        future, resolve = _future_resolver()
        known, watch = self._watch(execution_id, after_ms, False, resolve)
        if watch is None:
            return known
        try:
            async with asyncio.timeout(timeout):
                event = await future
        except TimeoutError:
            event = None
        finally:
            self.release(watch)
        self._check_open()
        return event

    def latest(self, execution_id: str, timeout: float) -> Event | None:
        """The most advanced event of the id, once its partition is read to where it ended when
        asked; None if it has none. Raises TimeoutError if that read takes over ``timeout``."""
        ready = threading.Event()
        _, watch = self._watch(execution_id, None, True, lambda _: ready.set())
        if watch is not None:
            try:
                if not ready.wait(timeout):
                    raise _status_timeout(execution_id, timeout)
            finally:
                self.release(watch)
        self._check_open()
        return self.known(execution_id)

    async def latest_async(self, execution_id: str, timeout: float) -> Event | None:
        future, resolve = _future_resolver()
        _, watch = self._watch(execution_id, None, True, resolve)
        if watch is not None:
            try:
                async with asyncio.timeout(timeout):
                    await future
            except TimeoutError:
                raise _status_timeout(execution_id, timeout) from None
            finally:
                self.release(watch)
        self._check_open()
        return self.known(execution_id)

    def known(self, execution_id: str, settled: bool = False) -> Event | None:
        """The most advanced event read of the id (or ``undelivered``), without waiting;
        ``settled``: only a ``deferred`` or final one."""
        with self._lock:
            reason = self._undelivered.get(execution_id)
            if reason is not None:
                return _undelivered(execution_id, reason)
            known = self._known.get(execution_id)
            if known is None or (settled and not known.settled):
                return None
            raw = known.raw
        return loads(raw)

    def fail(self, execution_id: str, reason: str) -> None:
        """The call never reached Kafka: its waiters get an ``undelivered`` event."""
        event = _undelivered(execution_id, reason)
        with self._lock:
            self._undelivered[execution_id] = reason
            if len(self._undelivered) > MAX_UNDELIVERED:
                del self._undelivered[next(iter(self._undelivered))]
            watches = _unresolved(self._watches.get(execution_id, ()))
        _resolve_all(watches, event)

    def undelivered(self, execution_id: str) -> str | None:
        with self._lock:
            return self._undelivered.get(execution_id)

    def waiting(self) -> dict[int, int]:
        """Partition -> waits on it, of the partitions being read (for tests and metrics)."""
        with self._lock:
            return {p: state.watchers for p, state in self._parts.items()}

    def remembered(self) -> int:
        """How many ids' latest events are remembered."""
        with self._lock:
            return len(self._known)

    def release(self, watch: Watch) -> None:
        """The wait is over (resolved, timed out or cancelled)."""
        with self._lock:
            if watch.done:
                return
            watch.done = True
            watches = self._watches.get(watch.id)
            if watches is not None and watch in watches:
                watches.remove(watch)
                if not watches:
                    del self._watches[watch.id]
            if watch.applied:
                self._released.append(watch)
        if watch.applied:
            self._wake.set()

    def close(self) -> None:
        """Stop reading; waits still open end (they raise CfStreamError)."""
        with self._lock:
            self._closed = True
            open_ = [w for ws in self._watches.values() for w in ws if not w.resolved]
            for watch in open_:
                watch.resolved = True
        _resolve_all(open_, None)
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _check_open(self) -> None:
        if self._closed:
            raise CfStreamError("the client was closed; create a new one to wait")

    def _watch(self, execution_id: str, after_ms: int | None, status: bool,
               resolve: Resolve) -> tuple[Event, None] | tuple[None, Watch]:
        if after_ms is not None:  # a successor: its outcome comes after its predecessor's end
            since = after_ms - CLOCK_MARGIN_MS
        else:
            since = (submitted_ms(execution_id) or int(time.time() * 1000) - DEFAULT_LOOKBACK_MS)
            since -= CLOCK_MARGIN_MS
        with self._lock:
            self._check_open()
            reason = self._undelivered.get(execution_id)
            if reason is not None:
                return _undelivered(execution_id, reason), None
            known = self._known.get(execution_id)
            if known is not None and known.settled:
                raw = known.raw
            else:
                watch = Watch(execution_id, since, status, resolve)
                self._watches.setdefault(execution_id, []).append(watch)
                self._requests.append(watch)
                self._start()
        if known is not None and known.settled:
            return loads(raw), None
        self._wake.set()
        return None, watch

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cfstream-waiters",
                                            daemon=True)
            self._thread.start()

    # -- the reader thread --------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed:
            try:
                self._read()
            except (KafkaException, CfStreamError) as exc:  # broker restart, topic electing
                logger.warning("events reader: %s; reconnecting", exc)
                time.sleep(1.0)
            except Exception:  # a bug: waits must not hang on it, so read on
                logger.exception("events reader failed; reconnecting")
                time.sleep(1.0)

    def _read(self) -> None:
        reads = _Reads(
            tail=Consumer(consumer_config(
                self.settings, None, **{"fetch.wait.max.ms": TAIL_FETCH_WAIT_MS})),
            history=History(Consumer(consumer_config(
                self.settings, None, **{"fetch.wait.max.ms": FETCH_WAIT_MS})), self.topic),
            offsets=Consumer(consumer_config(self.settings, None)))
        try:
            metadata = self._metadata(reads)
            with self._lock:
                self._partitions = len(metadata.partitions)
                self._parts.clear()
                self._status.clear()
                # New consumers start with nothing assigned: ask again for every wait.
                live = [w for ws in self._watches.values() for w in ws]
                for watch in live:
                    watch.applied = False
                    watch.targets = {}
                self._requests = deque(live)
                self._released.clear()
            while not self._closed:
                self._serve(reads)
        finally:
            for consumer in (reads.tail, reads.history.consumer, reads.offsets):
                consumer.close()

    def _metadata(self, reads: _Reads) -> Any:
        """The events topic's metadata, created if it is missing. Every consumer learns it at
        once, in parallel: a new client's first request can take ~50 ms (librdkafka drops the
        bootstrap connection it was sent on), and the first fetch of one that has no metadata
        yet waited up to a second."""
        consumers = (reads.offsets, reads.tail, reads.history.consumer)
        with ThreadPoolExecutor(len(consumers)) as pool:
            found = list(pool.map(lambda c: c.list_topics(self.topic, timeout=30), consumers))
        metadata = found[0].topics[self.topic]
        if metadata.error is not None or not metadata.partitions:
            ensure_topics(self.settings)  # a waiter may come first
            metadata = reads.offsets.list_topics(self.topic, timeout=30).topics[self.topic]
            if metadata.error is not None or not metadata.partitions:
                raise CfStreamError(f"events topic {self.topic}: {metadata.error}")
        return metadata

    def _serve(self, reads: _Reads) -> None:
        tail, history = reads.tail, reads.history
        if self._requests or self._released:  # (a look without the lock: _apply takes it)
            self._apply(reads)
        now = time.monotonic()
        if now >= self._next_idle_check:
            self._next_idle_check = now + IDLE_CHECK_S
            self._drop_idle(reads)
        if self.tick is not None:
            self.tick()
        if not self._parts:
            self._wake.wait(0.5)
            self._wake.clear()
            return
        # Soon after a wait needed a read, another is likely to (a loop over results taking up
        # partition after partition): poll briefly.
        wait = POLL_WAIT if now > self._brisk_until else BRISK_POLL_WAIT
        if history.busy:  # no long waits: a new wait may be about to need a partition
            noted, watched = history.take(BATCH, BRISK_POLL_WAIT)
            self._take(noted)
            self._take(watched, note=False)
            self._take(tail.consume(BATCH, 0))
        else:
            first = tail.poll(wait)
            if first is not None:
                self._take([first, *tail.consume(BATCH, 0)])
        if self._status:
            self._check_status(reads)

    def _apply(self, reads: _Reads) -> None:
        """Start reading for new waits; count down for ended ones."""
        ends: dict[int, tuple[int, float]] = {}  # partition -> (end, when asked)
        while True:
            with self._lock:
                if self._released:
                    watch = self._released.popleft()
                    for p in watch.partitions:
                        self._unwatch(p)
                    self._status.discard(watch)
                    continue
                if not self._requests:
                    return
                watch = self._requests.popleft()
                if watch.done:
                    continue
                watch.partitions = (
                    (partition_for(watch.id.encode(), self._partitions),) if self.by_murmur2
                    else tuple(range(self._partitions)))
            for p in watch.partitions:
                self._want(reads, p, watch, ends)
            with self._lock:
                watch.applied = True
                if watch.done:  # released while being applied
                    self._released.append(watch)
                elif watch.status:
                    self._status.add(watch)

    def _want(self, reads: _Reads, p: int, watch: Watch,
              ends: dict[int, tuple[int, float]]) -> None:
        state = self._parts.get(p)
        if state is None:
            start, end = self._offsets(reads, p, watch.since_ms)
            logger.debug("events partition %d: tail from %d, history from %d for %s",
                         p, end, start, watch.id)
            reads.tail.incremental_assign([TopicPartition(self.topic, p, end)])
            reads.history.read(p, start, end)
            self._brisk_until = time.monotonic() + BRISK_S
            state = _Partition(since_ms=watch.since_ms, lo=min(start, end), position=end)
            with self._lock:
                self._parts[p] = state
        else:
            self._look_back(reads, p, state, watch)
        if watch.status:  # one question for every status asked before it
            if p not in ends or ends[p][1] < watch.asked:
                asked = time.monotonic()
                ends[p] = self._end(reads, p), asked
            watch.targets[p] = ends[p][0]
        with self._lock:
            state.watchers += 1
            state.idle_since = None

    def _look_back(self, reads: _Reads, p: int, state: _Partition, watch: Watch) -> None:
        """Read what came before the partition's reads if the id may have records there, or
        where the memory forgot it. Before the reads, it goes back to twice the age the id
        needs, so that waits in any order look back a few times, not once each."""
        since_ms, lo = watch.since_ms, state.lo
        if since_ms < state.since_ms:
            since = since_ms - max(state.started_ms - since_ms, 0)
            start = self._offsets(reads, p, since)[0]
            logger.debug("events partition %d: back from %d to %d", p, state.lo, start)
            reads.history.read(p, start, state.lo)
            self._brisk_until = time.monotonic() + BRISK_S
            state.lo, state.since_ms = min(state.lo, start), since
        with self._lock:
            forgotten = self._known.forgotten(watch.id, p)
        # Ids forgotten long ago: a record stamped this late lies after theirs (clocks apart by
        # less than the margin), and so do the records of an id submitted after it.
        if forgotten is None or forgotten.offset < lo or not (
                forgotten.this_id or since_ms < forgotten.ts + 2 * CLOCK_MARGIN_MS):
            return
        start = max(self._offsets(reads, p, since_ms)[0], lo)
        if reads.history.will_read(p, start, forgotten.offset + 1):
            return  # a read asked for by an earlier wait passes there still
        logger.debug("events partition %d: %s again from %d to %d", p, watch.id, start,
                     forgotten.offset)
        # Only the ids waited on matter there: noting all of it again would make the memory
        # forget as many others.
        reads.history.read(p, start, forgotten.offset + 1, note=False)
        self._brisk_until = time.monotonic() + BRISK_S

    def _unwatch(self, p: int) -> None:
        state = self._parts.get(p)
        if state is not None:
            state.watchers -= 1
            if state.watchers <= 0:
                state.idle_since = time.monotonic()

    def _drop_idle(self, reads: _Reads) -> None:
        now = time.monotonic()
        idle = [p for p, state in self._parts.items()
                if state.idle_since is not None and now - state.idle_since > LINGER_S]
        if idle:
            reads.tail.incremental_unassign([TopicPartition(self.topic, p) for p in idle])
            for p in idle:
                reads.history.drop(p)
            with self._lock:
                for p in idle:
                    del self._parts[p]

    def _end(self, reads: _Reads, p: int) -> int:
        tp = TopicPartition(self.topic, p)
        return settled(lambda: reads.offsets.get_watermark_offsets(tp, timeout=10))[1]

    def _offsets(self, reads: _Reads, p: int, since_ms: int) -> tuple[int, int]:
        """The first offset of a record stamped ``since_ms`` or later, and the end."""
        starts, ends = offsets_since(reads.offsets, self.topic, [p], since_ms)
        return starts[p], ends[p]

    def _take(self, messages: list[Message], note: bool = True) -> None:
        """Note every record (or, without ``note``, those of ids waited on); resolve the waits
        on ids that settled."""
        if not messages:
            return
        parts, rank_of, watches, decode = self._parts, RANK.get, self._watches, orjson.loads
        noted = []
        for message in messages:
            raw = message.value()
            if raw is None or message.error() is not None:
                continue
            if not note and (message.key() or b"").decode(errors="replace") not in watches:
                continue
            p, offset = message.partition(), message.offset()
            state = parts.get(p)  # type: ignore[arg-type]
            if state is None or offset is None:
                continue  # a partition let go of while its records were on the way
            if offset >= state.position:
                state.position = offset + 1
            try:
                try:
                    event = decode(raw)
                except orjson.JSONDecodeError:
                    event = loads(raw)  # what orjson refuses
                rank = rank_of(event["type"])
                execution_id = event["id"]
            except (ValueError, TypeError, KeyError):
                continue  # not an event of ours; the events topic is not validated here
            if rank is None or type(execution_id) is not str or (
                    rank == SETTLED and type(event.get("successor")) is not str):
                continue  # (a deferred event that names no successor would end no wait)
            attempt = event.get("attempt")
            order = (attempt if type(attempt) is int else 1, rank)
            noted.append((execution_id, order, raw, p, offset, message.timestamp()[1]))
        resolved: list[tuple[list[Watch], Known]] = []
        with self._lock:
            remember = self._known.note
            for execution_id, order, raw, p, offset, ts in noted:
                known = remember(execution_id, order, raw, p, offset, ts)  # type: ignore[arg-type]
                if execution_id in watches and known.settled:
                    resolved.append((_unresolved(watches[execution_id]), known))
        for watches_of_id, known in resolved:
            if watches_of_id:
                _resolve_all(watches_of_id, known.event())

    def _check_status(self, reads: _Reads) -> None:
        with self._lock:
            waiting = [w for w in self._status if w.targets]
        if not waiting:
            return
        wanted = {p for w in waiting for p in w.targets}
        positions = {tp.partition: tp.offset for tp in reads.tail.position(
            [TopicPartition(self.topic, p) for p in wanted if p in self._parts])}
        ready = []
        for watch in waiting:
            if all(p in self._parts and not reads.history.pending(p)
                   and max(self._parts[p].position, positions.get(p, -1)) >= end
                   for p, end in watch.targets.items()):
                watch.targets = {}
                ready.append(watch)
        _resolve_all(ready, None)


def _unresolved(watches: Iterable[Watch]) -> list[Watch]:
    """The watches (not status ones) still to resolve, marked resolved; under the lock."""
    chosen = [w for w in watches if not w.status and not w.resolved]
    for watch in chosen:
        watch.resolved = True
    return chosen


def _resolve_all(watches: Iterable[Watch], event: Event | None) -> None:
    """Resolve each watch, whatever one of them raises: the others must not hang on it."""
    for watch in watches:
        try:
            watch.resolve(event)
        except Exception:
            logger.exception("resolving a wait on %s failed", watch.id)


def _undelivered(execution_id: str, reason: str) -> Event:
    return {"type": "undelivered", "id": execution_id, "reason": reason}


def _status_timeout(execution_id: str, timeout: float) -> TimeoutError:
    return TimeoutError(f"the events of {execution_id} could not be read within {timeout} s; "
                        "is the broker reachable? (pass a longer timeout to status())")


def _future_resolver() -> tuple[asyncio.Future[Event | None], Resolve]:
    """A future of the running loop, and a function any thread may call to settle it (now, if
    called on the loop's own thread)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Event | None] = loop.create_future()
    owner = threading.get_ident()
    mailbox = _Mailbox.of(loop)

    def resolve(event: Event | None) -> None:
        if threading.get_ident() == owner:
            _settle(future, event)
        else:
            mailbox.put(future, event)

    return future, resolve


def _settle(future: asyncio.Future[Event | None], event: Event | None) -> None:
    if not future.done():
        future.set_result(event)


class _Mailbox:
    """Settles one event loop's futures from other threads, with one wake-up of the loop for
    all that arrive together rather than one each (10,000 awaits resolved by one read)."""

    _lock = threading.Lock()
    _boxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Mailbox] = (
        weakref.WeakKeyDictionary())

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)  # (a strong one would keep the loop and its box forever)
        self.lock = threading.Lock()
        self.items: list[tuple[asyncio.Future[Event | None], Event | None]] = []

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Mailbox:
        with cls._lock:
            box = cls._boxes.get(loop)
            if box is None:
                box = cls._boxes[loop] = cls(loop)
            return box

    def put(self, future: asyncio.Future[Event | None], event: Event | None) -> None:
        with self.lock:
            self.items.append((future, event))
            if len(self.items) > 1:
                return  # a drain is on its way
        loop = self.loop()
        try:
            if loop is not None:
                loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            pass  # the loop was closed: no one awaits any more

    def _drain(self) -> None:
        with self.lock:
            items, self.items = self.items, []
        for future, event in items:
            _settle(future, event)
