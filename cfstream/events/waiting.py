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

This module is the waiting side; the reader's thread is :mod:`cfstream.events.reading`, and what
the two share is :mod:`cfstream.events.watches`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from cfstream.clock import CLOCK_MARGIN_MS, now_ms
from cfstream.codec import loads
from cfstream.errors import CfStreamError
from cfstream.events.known import Event
from cfstream.events.loops import future_resolver
from cfstream.events.reading import Reader
from cfstream.events.watches import (
    Resolve,
    Watch,
    Watches,
    resolve_all,
    unresolved,
)
from cfstream.ids import submitted_ms
from cfstream.settings import Settings

logger = logging.getLogger(__name__)

# Ids that carry no submit time (not UUIDv7) are looked for this far back.
DEFAULT_LOOKBACK_MS = 3_600_000
# Ids whose latest event is remembered (a few hundred bytes each; at most known.MAX_BYTES of
# records in all): a process can collect this many results after the fact without reading them
# again.
MAX_REMEMBERED = 100_000
# Delivery failures remembered for waiters that come after them.
MAX_UNDELIVERED = 10_000


class Waiters:
    """The process's waits on outcomes, and its one reader of them. ``tick`` runs on the
    reader's thread between polls (the client polls its producer there, so delivery failures
    reach waiters)."""

    def __init__(self, settings: Settings, tick: Callable[[], None] | None = None,
                 remember: int = MAX_REMEMBERED) -> None:
        self.settings = settings
        self._board = Watches(remember)
        self._reader = Reader(settings, self._board, tick)

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
        future, resolve = future_resolver()
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
        future, resolve = future_resolver()
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
        with self._board.lock:
            reason = self._board.undelivered.get(execution_id)
            if reason is not None:
                return _undelivered(execution_id, reason)
            known = self._board.known.get(execution_id)
            if known is None or (settled and not known.settled):
                return None
            raw = known.raw
        return loads(raw)

    def fail(self, execution_id: str, reason: str) -> None:
        """The call never reached Kafka: its waiters get an ``undelivered`` event."""
        event = _undelivered(execution_id, reason)
        with self._board.lock:
            self._board.undelivered[execution_id] = reason
            if len(self._board.undelivered) > MAX_UNDELIVERED:
                del self._board.undelivered[next(iter(self._board.undelivered))]
            watches = unresolved(self._board.by_id.get(execution_id, ()))
        resolve_all(watches, event)

    def undelivered(self, execution_id: str) -> str | None:
        with self._board.lock:
            return self._board.undelivered.get(execution_id)

    def waiting(self) -> dict[int, int]:
        """Partition -> waits on it, of the partitions being read (for tests and metrics)."""
        return self._reader.waiting()

    def remembered(self) -> int:
        """How many ids' latest events are remembered."""
        with self._board.lock:
            return len(self._board.known)

    def release(self, watch: Watch) -> None:
        """The wait is over (resolved, timed out or cancelled)."""
        with self._board.lock:
            if watch.done:
                return
            watch.done = True
            watches = self._board.by_id.get(watch.id)
            if watches is not None and watch in watches:
                watches.remove(watch)
                if not watches:
                    del self._board.by_id[watch.id]
            if watch.applied:
                self._board.released.append(watch)
        if watch.applied:
            self._board.wake.set()

    def close(self) -> None:
        """Stop reading; waits still open end (they raise CfStreamError)."""
        with self._board.lock:
            self._board.closed = True
            open_ = [w for ws in self._board.by_id.values() for w in ws if not w.resolved]
            for watch in open_:
                watch.resolved = True
        resolve_all(open_, None)
        self._board.wake.set()
        self._reader.join(timeout=5)

    def _check_open(self) -> None:
        if self._board.closed:
            raise CfStreamError("the client was closed; create a new one to wait")

    def _watch(self, execution_id: str, after_ms: int | None, status: bool,
               resolve: Resolve) -> tuple[Event, None] | tuple[None, Watch]:
        if after_ms is not None:  # a successor: its outcome comes after its predecessor's end
            since = after_ms - CLOCK_MARGIN_MS
        else:
            since = (submitted_ms(execution_id) or now_ms() - DEFAULT_LOOKBACK_MS)
            since -= CLOCK_MARGIN_MS
        with self._board.lock:
            self._check_open()
            reason = self._board.undelivered.get(execution_id)
            if reason is not None:
                return _undelivered(execution_id, reason), None
            known = self._board.known.get(execution_id)
            # Decided under the lock: the reader thread may settle ``known`` meanwhile.
            raw = known.raw if known is not None and known.settled else None
            if raw is None:
                watch = Watch(execution_id, since, status, resolve)
                self._board.by_id.setdefault(execution_id, []).append(watch)
                self._board.requests.append(watch)
                self._reader.start()
        if raw is not None:
            return loads(raw), None
        self._board.wake.set()
        return None, watch


def _undelivered(execution_id: str, reason: str) -> Event:
    return {"type": "undelivered", "id": execution_id, "reason": reason}


def _status_timeout(execution_id: str, timeout: float) -> TimeoutError:
    return TimeoutError(f"the events of {execution_id} could not be read within {timeout} s; "
                        "is the broker reachable? (pass a longer timeout to status())")
