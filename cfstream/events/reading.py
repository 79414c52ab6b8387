"""The events reader's thread: it reads the partitions of the ids waited on and resolves their
waits (see :mod:`cfstream.events.waiting` for the whole design).

A partition is read by a tail, from where it ended when someone first waited there, and by the
history (:mod:`cfstream.events.history`) below that. Offsets are asked of a third consumer that
never fetches. Every record read is noted in the memory (:mod:`cfstream.events.known`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from cfstream.clock import CLOCK_MARGIN_MS, now_ms
from cfstream.codec import loads
from cfstream.errors import CfStreamError
from cfstream.events.history import FETCH_WAIT_MS, History
from cfstream.events.known import RANK, SETTLED, Known
from cfstream.events.watches import Watch, Watches, resolve_all, unresolved
from cfstream.kafka.config import consumer_config
from cfstream.kafka.partitioner import partition_for, places_keys_by_murmur2
from cfstream.kafka.retry import offsets_since, partitions, watermarks
from cfstream.kafka.stall import Stall
from cfstream.kafka.topics import ensure_topics
from cfstream.settings import Settings

logger = logging.getLogger(__name__)

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
    started_ms: int = field(default_factory=now_ms)
    watchers: int = 0
    idle_since: float | None = None


class Reader:
    """The thread, started at the first wait. ``tick`` runs on it between polls (the client
    polls its producer there, so delivery failures reach waiters)."""

    def __init__(self, settings: Settings, watches: Watches,
                 tick: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.watches = watches
        self.tick = tick
        self.topic = settings.events_topic
        self.by_murmur2 = places_keys_by_murmur2(settings)
        self._parts: dict[int, _Partition] = {}
        self._status: set[Watch] = set()
        self._partitions = 0
        self._brisk_until = 0.0
        self._next_idle_check = 0.0
        # The tail can stop fetching after a broker restart (librdkafka#5153).
        self._stall = Stall(self.topic)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread if it is not running; call with the watches' lock."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cfstream-waiters",
                                            daemon=True)
            self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def waiting(self) -> dict[int, int]:
        """Partition -> waits on it, of the partitions being read."""
        with self.watches.lock:
            return {p: state.watchers for p, state in self._parts.items()}

    def _run(self) -> None:
        while not self.watches.closed:
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
        self._stall.began()
        try:
            count = self._partition_count(reads)
            with self.watches.lock:
                self._partitions = count
                self._parts.clear()
                self._status.clear()
                # New consumers start with nothing assigned: ask again for every wait.
                live = [w for ws in self.watches.by_id.values() for w in ws]
                for watch in live:
                    watch.applied = False
                    watch.targets = {}
                self.watches.requests = deque(live)
                self.watches.released.clear()
            while not self.watches.closed:
                self._serve(reads)
        finally:
            for consumer in (reads.tail, reads.history.consumer, reads.offsets):
                consumer.close()

    def _partition_count(self, reads: _Reads) -> int:
        """The events topic's partitions, created if it is missing. Every consumer learns it at
        once, in parallel: a new client's first request can take ~50 ms (librdkafka drops the
        bootstrap connection it was sent on), and the first fetch of one that has no metadata
        yet waited up to a second."""
        consumers = (reads.offsets, reads.tail, reads.history.consumer)
        with ThreadPoolExecutor(len(consumers)) as pool:
            found = list(pool.map(lambda c: c.list_topics(self.topic, timeout=30), consumers))
        metadata = found[0].topics[self.topic]
        if metadata.error is None and metadata.partitions:
            return len(metadata.partitions)
        ensure_topics(self.settings)  # a waiter may come first
        return len(partitions(reads.offsets, self.topic))

    def _serve(self, reads: _Reads) -> None:
        tail, history = reads.tail, reads.history
        if self.watches.requests or self.watches.released:  # (a look without the lock: _apply takes it)
            self._apply(reads)
        now = time.monotonic()
        if now >= self._next_idle_check:
            self._next_idle_check = now + IDLE_CHECK_S
            self._drop_idle(reads)
        if self.tick is not None:
            self.tick()
        if not self._parts:
            self.watches.wake.wait(0.5)
            self.watches.wake.clear()
            return
        # Soon after a wait needed a read, another is likely to (a loop over results taking up
        # partition after partition): poll briefly.
        wait = POLL_WAIT if now > self._brisk_until else BRISK_POLL_WAIT
        if history.busy:  # no long waits: a new wait may be about to need a partition
            noted, watched = history.take(BATCH, BRISK_POLL_WAIT)
            self._take(noted)
            self._take(watched, note=False)
            read = tail.consume(BATCH, 0)
        else:
            first = tail.poll(wait)
            read = [first, *tail.consume(BATCH, 0)] if first is not None else []
        if any(message.error() is None for message in read):
            self._stall.read()
        elif self._stall.replace(reads.offsets, {p: s.position for p, s in self._parts.items()}):
            raise CfStreamError("the events tail stopped fetching")  # new consumers, all waits
        self._take(read)
        if self._status:
            self._check_status(reads)

    def _apply(self, reads: _Reads) -> None:
        """Start reading for new waits; count down for ended ones."""
        ends: dict[int, tuple[int, float]] = {}  # partition -> (end, when asked)
        while True:
            with self.watches.lock:
                if self.watches.released:
                    watch = self.watches.released.popleft()
                    for p in watch.partitions:
                        self._unwatch(p)
                    self._status.discard(watch)
                    continue
                if not self.watches.requests:
                    return
                watch = self.watches.requests.popleft()
                if watch.done:
                    continue
                watch.partitions = (
                    (partition_for(watch.id.encode(), self._partitions),) if self.by_murmur2
                    else tuple(range(self._partitions)))
            for p in watch.partitions:
                self._want(reads, p, watch, ends)
            with self.watches.lock:
                watch.applied = True
                if watch.done:  # released while being applied
                    self.watches.released.append(watch)
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
            self._stall.began()
            reads.history.read(p, start, end)
            self._brisk_until = time.monotonic() + BRISK_S
            state = _Partition(since_ms=watch.since_ms, lo=min(start, end), position=end)
            with self.watches.lock:
                self._parts[p] = state
        else:
            self._look_back(reads, p, state, watch)
        if watch.status:  # one question for every status asked before it
            if p not in ends or ends[p][1] < watch.asked:
                asked = time.monotonic()
                ends[p] = self._end(reads, p), asked
            watch.targets[p] = ends[p][0]
        with self.watches.lock:
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
        with self.watches.lock:
            forgotten = self.watches.known.forgotten(watch.id, p)
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
            with self.watches.lock:
                for p in idle:
                    del self._parts[p]

    def _end(self, reads: _Reads, p: int) -> int:
        return watermarks(reads.offsets, self.topic, p, timeout=10)[1]

    def _offsets(self, reads: _Reads, p: int, since_ms: int) -> tuple[int, int]:
        """The first offset of a record stamped ``since_ms`` or later, and the end."""
        starts, ends = offsets_since(reads.offsets, self.topic, [p], since_ms)
        return starts[p], ends[p]

    def _take(self, messages: list[Message], note: bool = True) -> None:
        """Note every record (or, without ``note``, those of ids waited on); resolve the waits
        on ids that settled."""
        if not messages:
            return
        parts, rank_of, watches = self._parts, RANK.get, self.watches.by_id
        noted = []
        for message in messages:
            if message.error() is not None:
                continue
            p, offset = message.partition(), message.offset()
            state = parts.get(p)  # type: ignore[arg-type]
            if state is None or offset is None:
                continue  # a partition let go of while its records were on the way
            if offset >= state.position:
                state.position = offset + 1  # (a record that is no event is read past too)
            raw = message.value()
            if raw is None or (not note and (message.key() or b"").decode(errors="replace")
                               not in watches):
                continue
            try:
                event = loads(raw)
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
        with self.watches.lock:
            remember = self.watches.known.note
            for execution_id, order, raw, p, offset, ts in noted:
                known = remember(execution_id, order, raw, p, offset, ts)  # type: ignore[arg-type]
                if execution_id in watches and known.settled:
                    resolved.append((unresolved(watches[execution_id]), known))
        for watches_of_id, known in resolved:
            if watches_of_id:
                resolve_all(watches_of_id, known.event())

    def _check_status(self, reads: _Reads) -> None:
        with self.watches.lock:
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
        resolve_all(ready, None)
