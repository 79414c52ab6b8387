"""The console's memory of executions: each one's events (for its story) and where it stands
(for the executions list), for the most recent ``MAX_EXECUTIONS``."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from cfstream.console.paging import Cursor, page
from cfstream.wire import EVENT_RANK, event_order

Event = dict[str, Any]

# Executions whose events are kept for their story (about 1 KiB each).
MAX_EXECUTIONS = 20_000
# What each event type says of where its execution stands.
STATUS = {"scheduled": "pending", "started": "running", "retrying": "retrying",
          "deferred": "deferred", "succeeded": "succeeded", "failed": "failed",
          "cancelled": "cancelled", "invalid": "invalid"}


@dataclass
class Execution:
    """One execution's events as read, and a summary kept up to date as they come."""

    id: str
    events: list[Event] = field(default_factory=list)
    task: str | None = None
    defer_key: str | None = None
    first_ms: int = 0
    status: str = "unknown"
    attempt: int = 1
    started_ms: int | None = None  # the latest attempt's start
    ended_ms: int | None = None
    _furthest: tuple[int, int] = (0, -1)

    def add(self, event: Event) -> None:
        self.events.append(event)
        ts = event.get("ts_ms")
        if isinstance(ts, int) and (not self.first_ms or ts < self.first_ms):
            self.first_ms = ts
        if self.task is None and isinstance(event.get("task"), str):
            self.task, self.defer_key = event["task"], event.get("defer_key")
        kind = event.get("type")
        if kind not in EVENT_RANK:
            return
        order = event_order(event)
        if order >= self._furthest:
            self._furthest, self.attempt = order, order[0]
            self.status = STATUS[str(kind)]
        if kind == "started" and order[0] == self.attempt and isinstance(ts, int):
            self.started_ms, self.ended_ms = ts, None
        elif kind in ("succeeded", "failed", "retrying") and order[0] == self.attempt:
            self.ended_ms = ts if isinstance(ts, int) else None

    def row(self) -> dict[str, Any]:
        return {"id": self.id, "task": self.task, "defer_key": self.defer_key,
                "first_ms": self.first_ms, "status": self.status, "attempt": self.attempt,
                "started_ms": self.started_ms, "ended_ms": self.ended_ms}


@dataclass(frozen=True)
class ExecutionFilter:
    """What the executions list shows: a task (exact: ``scope``; contains: ``task``) and a
    status (exact); empty: any."""

    scope: str = ""
    task: str = ""
    status: str = ""

    def matches(self, execution: Execution) -> bool:
        task = execution.task or ""
        return ((not self.status or execution.status == self.status)
                and (not self.scope or task == self.scope)
                and self.task.lower() in task.lower())


def _key(execution: Execution) -> Cursor:
    return execution.first_ms, execution.id


class Executions:
    """Not thread-safe: the model locks."""

    def __init__(self) -> None:
        self._by_id: OrderedDict[str, Execution] = OrderedDict()

    def add(self, event: Event) -> bool:
        """Take in one event; False if it was here already (a reader re-reads)."""
        execution_id = str(event.get("id"))
        execution = self._by_id.get(execution_id)
        if execution is not None and event in execution.events:
            return False
        if execution is None:
            execution = self._by_id[execution_id] = Execution(execution_id)
            if len(self._by_id) > MAX_EXECUTIONS:
                self._by_id.popitem(last=False)
        execution.add(event)
        return True

    def get(self, execution_id: str) -> Execution | None:
        return self._by_id.get(execution_id)

    def events(self, execution_id: str) -> list[Event]:
        execution = self._by_id.get(execution_id)
        return execution.events if execution is not None else []

    def page(self, where: ExecutionFilter, after: Cursor | None, limit: int) -> dict[str, Any]:
        newest_first = sorted((e for e in self._by_id.values() if where.matches(e)), key=_key,
                              reverse=True)
        shown = page(newest_first, _key, after, limit, descending=True)
        return {**shown, "rows": [e.row() for e in shown["rows"]]}

    def running(self) -> int:
        return sum(1 for e in self._by_id.values() if e.status == "running")
