"""What the rules tests share: their constants and the calls they feed a key."""

from __future__ import annotations

from typing import Any

from cfstream.scheduling import rules
from cfstream.wire import NO_MODES, Call, Collect, FiredCall, Modes

DELAY = 1_000
RETENTION = 60_000
MODE_NAMES = {"leading", "keep", "collect", "if_running"}


def make_call(call_id: str, submitted_ms: int, delay_ms: int = DELAY, **fields: Any) -> Call:
    """A call of ``tasks:notify`` on key ``k``, its id as its one argument; ``fields`` set the
    rest (``defer_key``, ``max_wait_ms``...), and the modes by name (``leading=True``,
    ``collect=(max_calls, max_bytes)``...)."""
    modes = {name: fields.pop(name) for name in MODE_NAMES & fields.keys()}
    if modes.get("collect") is not None:
        modes["collect"] = Collect(*modes["collect"])
    return Call(**{"id": call_id, "task": "tasks:notify", "args": [call_id], "kwargs": {},
                   "submitted_ms": submitted_ms, "delay_ms": delay_ms, "defer_key": "k",
                   "modes": Modes(**modes) if modes else NO_MODES, **fields})


def outcomes(decision: rules.Decision) -> list[tuple[str, str, str | None]]:
    """(type, id, successor) of each event the decision publishes."""
    return [(e["type"], e["id"], e.get("successor")) for e in decision.events]


class KeyLog:
    """One key's slot as decisions change it, and what they publish, in order: ``("event",
    dict)`` and ``("execution", FiredCall)``. A call or tick read again may send its execution
    again, but only the very same record: a second, different one is a call run twice."""

    def __init__(self) -> None:
        self.slot: rules.Slot | None = None
        self.items: list[tuple[str, Any]] = []
        self.sent: dict[str, FiredCall] = {}  # each call's execution, in the order first sent

    def apply(self, decision: rules.Decision) -> None:
        if not decision.changed:
            assert decision.slot is self.slot
        self.slot = decision.slot
        self.items.extend(("event", e) for e in decision.events)
        for execution in decision.executions:
            assert self.sent.setdefault(execution.call.id, execution) == execution, \
                "a call fired twice"
            self.items.append(("execution", execution))

    def outcomes(self) -> dict[str, tuple[str, str | None]]:
        """Each call's first outcome: ``("run", None)`` or ``("deferred", successor)``."""
        first: dict[str, tuple[str, str | None]] = {}
        for kind, item in self.items:
            if kind == "execution":
                first.setdefault(item.call.id, ("run", None))
            elif item["type"] == "deferred":
                first.setdefault(item["id"], ("deferred", item["successor"]))
        return first
