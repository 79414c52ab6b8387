"""The console's live model: per-task rates and outcomes from the events topic, pending calls
from the processors' changelog, and the recent events of each execution for its story.

Everything is bounded: rates look at a sliding window, stories are kept for the most recent
executions only, and the pending list is the latest snapshot of the changelog.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from cfstream.processor.pending import Pending, modes
from cfstream.wire import TERMINAL_EVENTS, Call

Event = dict[str, Any]

# Rates are over the last minute: steady enough to read, short enough to follow a burst.
RATE_WINDOW_MS = 60_000
# Executions whose events are kept for their story (about 1 KiB each).
MAX_EXECUTIONS = 20_000
# The rate window of one task never holds more events than this, whatever the rate.
MAX_WINDOW_EVENTS = 100_000
# The "latest events" list on the page.
RECENT_EVENTS = 50
# Pending calls sent to the page at once (the count is always the full one).
MAX_PENDING_SHOWN = 200
# A deferral chain longer than this is cut (each hop is to a newer call, so it cannot loop).
MAX_CHAIN = 100
# Events saying a call no longer waits: the changelog snapshot may not show it yet.
GONE = ("started", "deferred", "succeeded", "failed", "cancelled")


@dataclass
class TaskStats:
    """One task's recent events (for rates) and its totals since the console began reading."""

    window: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=MAX_WINDOW_EVENTS))
    lateness: deque[tuple[int, int]] = field(
        default_factory=lambda: deque(maxlen=MAX_WINDOW_EVENTS))
    failed: int = 0
    succeeded: int = 0
    cancelled: int = 0


def percentile(values: list[int], q: float) -> int | None:
    """The nearest-rank percentile of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]


class Model:
    """Thread-safe: Kafka readers write from their threads, the web app reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskStats] = {}
        self._executions: OrderedDict[str, list[Event]] = OrderedDict()
        self._recent: deque[Event] = deque(maxlen=RECENT_EVENTS)
        self._pending: list[Pending] = []
        self._pending_read_ms: int | None = None
        self._dead_letters = 0
        self._errors: dict[str, str] = {}

    # -- fed by the readers ------------------------------------------------------------------

    def add_event(self, event: Event) -> bool:
        """Take in one event; False if it was already here (a reader re-reads after a reconnect)."""
        execution_id = str(event.get("id"))
        with self._lock:
            seen = self._executions.get(execution_id)
            if seen is not None and event in seen:
                return False
            if seen is None:
                seen = self._executions[execution_id] = []
                if len(self._executions) > MAX_EXECUTIONS:
                    self._executions.popitem(last=False)
            seen.append(event)
            self._recent.append(event)
            self._count(event)
            return True

    def _count(self, event: Event) -> None:
        kind, ts = event.get("type"), event.get("ts_ms")
        if kind == "invalid":
            self._dead_letters += 1
            return
        if not isinstance(ts, int) or not isinstance(event.get("task"), str):
            return
        stats = self._tasks.setdefault(event["task"], TaskStats())
        stats.window.append((ts, "fired" if event.get("reason") == "backlog" else str(kind)))
        if kind == "started":
            fired, due = event.get("fired_ms"), event.get("due_ms")
            if isinstance(fired, int) and isinstance(due, int):
                stats.lateness.append((ts, fired - due))
        elif kind in ("failed", "succeeded", "cancelled"):
            setattr(stats, str(kind), getattr(stats, str(kind)) + 1)

    def set_pending(self, found: list[Pending], now_ms: int) -> None:
        with self._lock:
            self._pending = found
            self._pending_read_ms = now_ms

    def set_error(self, source: str, message: str | None) -> None:
        """What a reader could not do (None: it works again); shown on the page."""
        with self._lock:
            if message is None:
                self._errors.pop(source, None)
            else:
                self._errors[source] = message

    # -- read by the web app -----------------------------------------------------------------

    def snapshot(self, now_ms: int, *, task: str = "", key: str = "",
                 story: str = "") -> dict[str, Any]:
        """Everything the page shows, as JSON-ready data."""
        with self._lock:
            waiting = [p for p in self._pending if not self._gone(p.call)]
            shown = [p for p in waiting
                     if task.lower() in p.call.task.lower()
                     and key.lower() in (p.call.defer_key or "").lower()]
            return {
                "now_ms": now_ms,
                "tasks": self._task_rows(now_ms, waiting),
                "dead_letters": self._dead_letters,
                "pending": {"total": len(waiting), "matching": len(shown),
                            "read_ms": self._pending_read_ms,
                            "calls": [_pending_row(p) for p in shown[:MAX_PENDING_SHOWN]]},
                "recent": list(reversed(self._recent)),
                "story": self._story(story.strip()) if story.strip() else None,
                "errors": dict(self._errors),
            }

    def _gone(self, call: Call) -> bool:
        """Whether events say this attempt of the call no longer waits (a retry is the same
        id, a later attempt: the first attempt's events do not hide it)."""
        return any(e.get("type") in GONE and (e.get("attempt") or 1) >= call.attempt
                   for e in self._executions.get(call.id, ()))

    def _task_rows(self, now_ms: int, waiting: list[Pending]) -> list[dict[str, Any]]:
        start = now_ms - RATE_WINDOW_MS
        pending: dict[str, list[int]] = {}
        for p in waiting:
            pending.setdefault(p.call.task, []).append(p.due_ms)
        rows = []
        for name in sorted(set(self._tasks) | set(pending)):
            stats = self._tasks.get(name) or TaskStats()
            while stats.window and stats.window[0][0] < start:
                stats.window.popleft()
            while stats.lateness and stats.lateness[0][0] < start:
                stats.lateness.popleft()
            counts: dict[str, int] = {}
            for _, kind in stats.window:
                counts[kind] = counts.get(kind, 0) + 1
            calls, deferred = counts.get("scheduled", 0), counts.get("deferred", 0)
            lateness = [ms for _, ms in stats.lateness]
            per_second = RATE_WINDOW_MS / 1000
            dues = pending.get(name, [])
            rows.append({
                "task": name,
                "pending": len(dues),
                "next_due_ms": min(dues) if dues else None,
                "calls_per_s": calls / per_second,
                "deferrals_per_s": deferred / per_second,
                "collapse": deferred / calls if calls else None,
                "fires_per_s": (counts.get("started", 0) + counts.get("fired", 0)) / per_second,
                "lateness_p50_ms": percentile(lateness, 0.5),
                "lateness_p99_ms": percentile(lateness, 0.99),
                "succeeded": stats.succeeded,
                "failed": stats.failed,
                "cancelled": stats.cancelled,
            })
        return rows

    def _story(self, execution_id: str) -> dict[str, Any]:
        """The execution's events, then each successor's, to the call that ran (or still waits)."""
        pending = {p.call.id: p for p in self._pending if not self._gone(p.call)}
        steps: list[dict[str, Any]] = []
        current: str | None = execution_id
        while current is not None and len(steps) < MAX_CHAIN:
            events = sorted(self._executions.get(current, []), key=lambda e: e.get("ts_ms", 0))
            waiting = pending.get(current)
            steps.append({"id": current, "events": events,
                          "pending": _pending_row(waiting) if waiting else None})
            current = next((str(e["successor"]) for e in events
                            if e.get("type") == "deferred" and e.get("successor")), None)
        last = steps[-1]
        outcome = next((e for e in last["events"] if e.get("type") in (*TERMINAL_EVENTS,
                                                                         "invalid")), None)
        if outcome is not None:
            status = str(outcome["type"])
        elif last["pending"] is not None:
            status = "pending"
        elif any(e.get("type") == "started" for e in last["events"]):
            status = "running"
        else:
            status = "unknown" if not last["events"] else "in flight"
        return {"id": execution_id, "steps": steps, "status": status, "outcome": outcome,
                "known": any(step["events"] or step["pending"] for step in steps)}


def _pending_row(p: Pending) -> dict[str, Any]:
    call = p.call
    return {"id": call.id, "task": call.task, "defer_key": call.defer_key, "due_ms": p.due_ms,
            "attempt": call.attempt,
            "first_ms": p.first_ms, "submitted_ms": call.submitted_ms, "args": call.args,
            "kwargs": call.kwargs, "modes": modes(p)}


