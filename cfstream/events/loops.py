"""Settling a coroutine's wait from the events reader's thread: a future of the running loop,
and a mailbox per loop so that all the waits one read resolves wake the loop once."""

from __future__ import annotations

import asyncio
import threading
import weakref

from cfstream.events.known import Event
from cfstream.events.watches import Resolve


def future_resolver() -> tuple[asyncio.Future[Event | None], Resolve]:
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
