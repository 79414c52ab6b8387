"""The waits of a process and what its events reader has learned: shared by the threads that
wait (:mod:`cfstream.events.waiting`) and the reader's thread (:mod:`cfstream.events.reading`),
under one lock."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cfstream.events.known import Event, KnownEvents

logger = logging.getLogger(__name__)

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


class Watches:
    """Every wait not yet let go of, by id; the waits the reader has still to take up or count
    down; the memory of events read; calls that never reached Kafka."""

    def __init__(self, remember: int) -> None:
        self.lock = threading.Lock()
        self.wake = threading.Event()  # new work for the reader
        self.known = KnownEvents(remember)
        self.by_id: dict[str, list[Watch]] = {}
        self.requests: deque[Watch] = deque()
        self.released: deque[Watch] = deque()
        self.undelivered: dict[str, str] = {}
        self.closed = False


def unresolved(watches: Iterable[Watch]) -> list[Watch]:
    """The watches (not status ones) still to resolve, marked resolved; under the lock."""
    chosen = [w for w in watches if not w.status and not w.resolved]
    for watch in chosen:
        watch.resolved = True
    return chosen


def resolve_all(watches: Iterable[Watch], event: Event | None) -> None:
    """Resolve each watch, whatever one of them raises: the others must not hang on it."""
    for watch in watches:
        try:
            watch.resolve(event)
        except Exception:
            logger.exception("resolving a wait on %s failed", watch.id)
