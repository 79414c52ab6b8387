"""Events (what happened to a call, keyed by its execution id) and dead letters (a record that
broke the wire format, parked with why)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cfstream.codec import dumps
from cfstream.wire.reading import InvalidRecord
from cfstream.wire.records import SCHEMA_VERSION, Call

EVENT_TYPES = (
    "scheduled", "deferred", "started", "succeeded", "failed", "cancelled", "invalid",
    "retrying",
)
TERMINAL_EVENTS = ("succeeded", "failed", "cancelled")
# How far along its execution each event type is, within one attempt: a reader keeps the
# furthest event of each id (see event_order). `retrying` ends an attempt, not the execution.
EVENT_RANK = {"scheduled": 0, "started": 1, "retrying": 2, "deferred": 3, "invalid": 4,
              **{name: 4 for name in TERMINAL_EVENTS}}


def event(type_: str, call: Call, ts_ms: int, **extra: Any) -> dict[str, Any]:
    """An event record about ``call``; ``extra`` adds the type's own fields. Events of a retry
    name its attempt."""
    if call.attempt != 1:
        extra["attempt"] = call.attempt
    return {"v": SCHEMA_VERSION, "type": type_, "id": call.id, "task": call.task,
            "defer_key": call.defer_key, "ts_ms": ts_ms, **extra}


def event_order(event: dict[str, Any], rank: dict[str, int] = EVENT_RANK) -> tuple[int, int]:
    """How far along its execution an event is: by attempt, then by the ``rank`` of its type
    (KeyError for a type not in it)."""
    attempt = event.get("attempt")
    return (attempt if type(attempt) is int else 1), rank[event["type"]]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An unreadable record as it goes to the dead-letter topic (unchanged, with why and where
    from in its headers), and the ``invalid`` event that says so."""

    reason: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]]
    event_key: bytes
    event: bytes


def dead_letter(error: InvalidRecord, topic: str, partition: int | None, offset: int | None,
                key: bytes | None, value: bytes | None, now_ms: int) -> DeadLetter:
    """The records that park a bad record read from ``topic``. The event is keyed by the
    record's id when it has a readable one, so that its waiters learn why, else by "invalid"."""
    # A lone surrogate (from the record) cannot be UTF-8: escape it.
    reason = error.reason.encode("utf-8", "backslashreplace").decode("utf-8")
    execution_id = _guess_id(value)
    event = {"v": SCHEMA_VERSION, "type": "invalid", "id": execution_id, "reason": reason,
             "topic": topic, "partition": partition, "offset": offset, "ts_ms": now_ms}
    return DeadLetter(
        reason,
        # Kafka clients refuse a record with neither key nor value.
        key=b"" if key is None and value is None else key, value=value,
        headers=[("cfstream-reason", reason.encode()),
                 ("cfstream-source", f"{topic}:{partition}:{offset}".encode())],
        event_key=(execution_id or "invalid").encode(), event=dumps(event))


def _guess_id(raw: bytes | None) -> str | None:
    """The id of a bad record, if it names one. Read leniently, as Python's json reads (NaN, a
    BOM, UTF-16): such a record is still parked, but its waiters learn why."""
    try:
        ident: Any = json.loads(raw or b"").get("id")
        if isinstance(ident, str):
            ident.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError, a ValueError
            return ident
        return None
    except (ValueError, AttributeError, TypeError, RecursionError):
        return None
