"""The latest events in time order (by their ``ts_ms``: events of several writers arrive out of
order), bounded, with filtered pages newest first; and the dead letters apart, so that a busy
pipeline does not push them out."""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from typing import Any

from cfstream.console.paging import Cursor, page

Event = dict[str, Any]

# Events kept for the events list (about 3 minutes at 300 events/s; most are shared with the
# stories' memory). `cfstream events` reads the whole topic.
MAX_EVENTS = 50_000
# Dropped at once when full, so that a full log does not move its list on every event.
TRIM = 5_000
# Dead letters (`invalid` events) kept for their list.
MAX_DEAD_LETTERS = 1_000


@dataclass(frozen=True)
class EventFilter:
    """What the events list shows: a task (exact: ``scope``; contains: ``task``), an event
    type (exact), and text found in the execution id or the defer key; empty: any."""

    scope: str = ""
    task: str = ""
    type: str = ""
    text: str = ""

    def matches(self, event: Event) -> bool:
        if self.type and event.get("type") != self.type:
            return False
        task = str(event.get("task") or "")
        if (self.scope and task != self.scope) or self.task.lower() not in task.lower():
            return False
        if self.text:
            text = self.text.lower()
            return (text in str(event.get("id") or "").lower()
                    or text in str(event.get("defer_key") or "").lower())
        return True


def _key(entry: tuple[int, int, Event]) -> Cursor:
    # Zero-padded: cursors compare as (int, str).
    return entry[0], f"{entry[1]:012d}"


class EventLog:
    """Not thread-safe: the model locks."""

    def __init__(self) -> None:
        self._events: list[tuple[int, int, Event]] = []  # (ts_ms, arrival, event), sorted
        self._dead: deque[tuple[int, int, Event]] = deque(maxlen=MAX_DEAD_LETTERS)
        self._arrivals = 0
        self.dead_letters = 0  # all read, not only those kept

    def add(self, event: Event) -> None:
        ts = event.get("ts_ms")
        self._arrivals += 1
        entry = (ts if isinstance(ts, int) else 0, self._arrivals, event)
        if self._events and entry < self._events[-1]:
            bisect.insort(self._events, entry)
        else:
            self._events.append(entry)
        if len(self._events) > MAX_EVENTS:
            del self._events[:TRIM]
        if event.get("type") == "invalid":
            self.dead_letters += 1
            self._dead.append(entry)

    def page(self, where: EventFilter, after: Cursor | None, limit: int) -> dict[str, Any]:
        shown = page((entry for entry in reversed(self._events) if where.matches(entry[2])),
                     _key, after, limit, descending=True)
        return _events_only(shown)

    def dead_letter_page(self, after: Cursor | None, limit: int) -> dict[str, Any]:
        newest_first = sorted(self._dead, reverse=True)
        return {**_events_only(page(newest_first, _key, after, limit, descending=True)),
                "count": self.dead_letters}


def _events_only(shown: dict[str, Any]) -> dict[str, Any]:
    return {**shown, "rows": [event for _, _, event in shown["rows"]]}
