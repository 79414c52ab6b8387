"""The console's live model: per-task and pipeline time series and totals from the events
topic, pending calls from the processors' changelog, the latest events and executions.

Bounded: the series hold an hour of seconds for at most ``MAX_SERIES`` tasks, the events list
and the executions' memory hold the most recent ones only, and the pending list is the latest
snapshot of the changelog. Only the outcome totals (five counters) grow, by one row for each
task name ever seen.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from cfstream.console.eventlog import EventFilter, EventLog
from cfstream.console.executions import ExecutionFilter, Executions
from cfstream.console.paging import Cursor, page
from cfstream.console.series import Series, histogram_percentile
from cfstream.console.story import story
from cfstream.console.view import View
from cfstream.processor.pending import Pending, modes
from cfstream.wire import Call

Event = dict[str, Any]

# The tasks table's rates are over the last minute: steady enough to read, short enough to
# follow a burst.
RATE_WINDOW_S = 60
# Tasks with a chart of their own (about 120 KB each); the least recently active goes first.
# The pipeline's chart counts every task.
MAX_SERIES = 200
# Event times charted: up to 2**53 ms (what JSON numbers carry exactly); the wire format accepts
# any integer, and the series keep their seconds in 64-bit slots.
MAX_TS_MS = 2**53
# Rows of each list in the per-task view (each links to the whole list).
TASK_VIEW_ROWS = 10
# Events saying a call no longer waits: the changelog snapshot may not show it yet.
GONE = ("started", "deferred", "succeeded", "failed", "cancelled")
OUTCOMES = ("succeeded", "failed", "cancelled")


@dataclass
class PendingFilter:
    scope: str = ""  # exact task
    task: str = ""  # task contains
    key: str = ""  # defer key contains

    def matches(self, p: Pending) -> bool:
        return ((not self.scope or p.call.task == self.scope)
                and self.task.lower() in p.call.task.lower()
                and self.key.lower() in (p.call.defer_key or "").lower())


class Model:
    """Thread-safe: Kafka readers write from their threads, the web app reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: dict[str, dict[str, int]] = {}
        self._series: OrderedDict[str, Series] = OrderedDict()
        self._pipeline = Series()
        self._executions = Executions()
        self._log = EventLog()
        self._pending: list[Pending] = []
        self._pending_read_ms: int | None = None
        self._errors: dict[str, str] = {}

    # -- fed by the readers ------------------------------------------------------------------

    def add_event(self, event: Event) -> bool:
        """Take in one event; False if it was already here (a reader re-reads after a reconnect)."""
        with self._lock:
            if not self._executions.add(event):
                return False
            self._log.add(event)
            self._count(event)
            return True

    def _count(self, event: Event) -> None:
        kind, ts, task = event.get("type"), event.get("ts_ms"), event.get("task")
        if not isinstance(ts, int) or not 0 <= ts < MAX_TS_MS or not isinstance(task, str):
            return  # a foreign writer's event: listed, not charted
        if kind in OUTCOMES:
            outcomes = self._outcomes.setdefault(task, dict.fromkeys(OUTCOMES, 0))
            outcomes[str(kind)] += 1
        lateness = None
        if kind == "scheduled":
            counter = "calls"
        elif kind == "deferred":
            counter = "fires" if event.get("reason") == "backlog" else "deferrals"
        elif kind == "started":
            counter = "fires"
            fired, due = event.get("fired_ms"), event.get("due_ms")
            if isinstance(fired, int) and isinstance(due, int):
                lateness = fired - due
        elif kind == "failed":
            counter = "failed"
        else:
            return
        for series in (self._task_series(task), self._pipeline):
            series.count(ts, counter, lateness)

    def _task_series(self, task: str) -> Series:
        series = self._series.get(task)
        if series is None:
            series = self._series[task] = Series()
            if len(self._series) > MAX_SERIES:
                self._series.popitem(last=False)
        self._series.move_to_end(task)
        return series

    def set_pending(self, found: list[Pending], now_ms: int) -> None:
        with self._lock:
            self._pending = sorted(found, key=lambda p: (p.due_ms, p.call.id))  # as paged
            self._pending_read_ms = now_ms
            counts: dict[str, int] = {}
            for p in self._waiting():
                counts[p.call.task] = counts.get(p.call.task, 0) + 1
            for task in counts:
                self._task_series(task)
            for task, series in self._series.items():
                series.sample_pending(now_ms, counts.get(task, 0))
            self._pipeline.sample_pending(now_ms, sum(counts.values()))

    def set_error(self, source: str, message: str | None) -> None:
        """What a reader could not do (None: it works again); shown on the page."""
        with self._lock:
            if message is None:
                self._errors.pop(source, None)
            else:
                self._errors[source] = message

    # -- read by the web app -----------------------------------------------------------------

    def snapshot(self, now_ms: int, view: View | None = None) -> dict[str, Any]:
        """What a page showing ``view`` needs, as JSON-ready data."""
        view = view or View()
        with self._lock:
            waiting = self._waiting()
            shown: dict[str, Any] = {
                "now_ms": now_ms, "section": view.section, "errors": dict(self._errors),
                "tasks": self._task_rows(now_ms, waiting),
                "summary": {"pending": len(waiting), "pending_read_ms": self._pending_read_ms,
                            "running": self._executions.running(),
                            "dead_letters": self._log.dead_letters}}
            shown.update(self._section(now_ms, view, waiting))
            return shown

    def _section(self, now_ms: int, view: View, waiting: list[Pending]) -> dict[str, Any]:
        limit, after = view.limit, view.after
        if view.section == "overview":
            return {"chart": self._pipeline.chart(now_ms, view.span_s)}
        if view.section == "task":
            series = self._series.get(view.scope)
            rows = TASK_VIEW_ROWS
            return {"chart": series.chart(now_ms, view.span_s) if series else None,
                    "pending": _pending_page(waiting, PendingFilter(scope=view.scope), None,
                                             rows),
                    "executions": self._executions.page(ExecutionFilter(scope=view.scope),
                                                        None, rows),
                    "events": self._log.page(EventFilter(scope=view.scope), None, rows)}
        if view.section == "pending":
            pending = PendingFilter(scope=view.scope, task=view.task, key=view.key)
            return {"pending": _pending_page(waiting, pending, after, limit)}
        if view.section == "executions":
            ran = ExecutionFilter(scope=view.scope, task=view.task, status=view.status)
            return {"executions": self._executions.page(ran, after, limit)}
        if view.section == "events":
            events = EventFilter(scope=view.scope, task=view.task, type=view.type,
                                 text=view.text)
            return {"events": self._log.page(events, after, limit)}
        if view.section == "dead-letters":
            return {"dead_letters": self._log.dead_letter_page(after, limit)}
        by_id = {p.call.id: p for p in waiting}
        found = story(view.story, self._executions,
                      lambda i: _pending_row(by_id[i]) if i in by_id else None)
        return {"story": found if view.story else None}

    def _waiting(self) -> list[Pending]:
        return [p for p in self._pending if not self._gone(p.call)]

    def _gone(self, call: Call) -> bool:
        """Whether events say this attempt of the call no longer waits (a retry is the same
        id, a later attempt: the first attempt's events do not hide it)."""
        return any(e.get("type") in GONE and (e.get("attempt") or 1) >= call.attempt
                   for e in self._executions.events(call.id))

    def _task_rows(self, now_ms: int, waiting: list[Pending]) -> list[dict[str, Any]]:
        last = now_ms // 1000 - 1
        dues: dict[str, list[int]] = {}
        for p in waiting:
            dues.setdefault(p.call.task, []).append(p.due_ms)
        rows = []
        for name in sorted(set(self._series) | set(self._outcomes) | set(dues)):
            series = self._series.get(name)
            totals = series.totals(last - RATE_WINDOW_S + 1, last) if series else None
            counts = totals.counts if totals else {}
            calls, deferred = counts.get("calls", 0), counts.get("deferrals", 0)
            lateness = totals.lateness if totals else {}
            task_dues = dues.get(name, [])
            rows.append({
                "task": name,
                "pending": len(task_dues),
                "next_due_ms": min(task_dues) if task_dues else None,
                "calls_per_s": calls / RATE_WINDOW_S,
                "deferrals_per_s": deferred / RATE_WINDOW_S,
                "collapse": deferred / calls if calls else None,
                "fires_per_s": counts.get("fires", 0) / RATE_WINDOW_S,
                "lateness_p50_ms": histogram_percentile(lateness, 0.5),
                "lateness_p99_ms": histogram_percentile(lateness, 0.99),
                **self._outcomes.get(name, dict.fromkeys(OUTCOMES, 0)),
            })
        return rows


def _pending_page(waiting: list[Pending], where: PendingFilter, after: Cursor | None,
                  limit: int) -> dict[str, Any]:
    shown = page((p for p in waiting if where.matches(p)), lambda p: (p.due_ms, p.call.id),
                 after, limit, descending=False)
    return {**shown, "rows": [_pending_row(p) for p in shown["rows"]], "all": len(waiting)}


def _pending_row(p: Pending) -> dict[str, Any]:
    call = p.call
    return {"id": call.id, "task": call.task, "defer_key": call.defer_key, "due_ms": p.due_ms,
            "attempt": call.attempt,
            "first_ms": p.first_ms, "submitted_ms": call.submitted_ms, "args": call.args,
            "kwargs": call.kwargs, "modes": modes(p)}
