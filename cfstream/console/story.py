"""An execution's story: its events, then each successor's, to the call that ran (or still
waits), with what the page's timeline needs: the run a held call waited for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cfstream.console.executions import Executions
from cfstream.wire import TERMINAL_EVENTS

# A deferral chain longer than this is cut (each hop is to a newer call, so it cannot loop).
MAX_CHAIN = 100


def story(execution_id: str, executions: Executions,
          pending: Callable[[str], dict[str, Any] | None]) -> dict[str, Any]:
    """``pending(id)``: the pending row of a call that still waits, else None."""
    steps: list[dict[str, Any]] = []
    current: str | None = execution_id
    while current is not None and len(steps) < MAX_CHAIN:
        events = sorted(executions.events(current), key=lambda e: e.get("ts_ms", 0))
        steps.append({"id": current, "events": events, "pending": pending(current),
                      "blocker": _blocker(events, executions)})
        current = next((str(e["successor"]) for e in events
                        if e.get("type") == "deferred" and e.get("successor")), None)
    last = steps[-1]
    outcome = next((e for e in reversed(last["events"])
                    if e.get("type") in (*TERMINAL_EVENTS, "invalid")), None)
    return {"id": execution_id, "steps": steps, "status": _status(last, outcome),
            "outcome": outcome, "known": any(step["events"] or step["pending"] for step in steps)}


def _status(last: dict[str, Any], outcome: dict[str, Any] | None) -> str:
    if outcome is not None:
        return str(outcome["type"])
    if last["pending"] is not None:
        return "pending"
    kinds = [e.get("type") for e in last["events"]]
    if kinds and kinds[-1] == "retrying":
        return "retrying"
    if "started" in kinds:
        return "running"
    return "in flight" if kinds else "unknown"


def _blocker(events: list[dict[str, Any]], executions: Executions) -> dict[str, Any] | None:
    """The run a held call (``if_running="after"``) waited for, as far as the console saw it."""
    after = next((e["after"] for e in events
                  if e.get("type") == "scheduled" and isinstance(e.get("after"), str)), None)
    if after is None:
        return None
    blocker = executions.get(after)
    return {"id": after, "started_ms": blocker.started_ms if blocker else None,
            "ended_ms": blocker.ended_ms if blocker else None,
            "status": blocker.status if blocker else "unknown"}
