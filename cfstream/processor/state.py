"""How the processor lays out a calls partition's RocksDB.

Two kinds of keys, both in the partition of the call that wrote them:
    b"k:" + call key                  -> the key's Slot, as JSON (also on the changelog)
    b"d:" + due (8-byte big endian) + call key -> the timer id of the slot due then (local)
The "d:" keys sort by due time, so the timer finds what is due with one seek per partition and
never walks keys that are not due. An index entry whose slot has since moved on (a replaced
call's, or one a restore wrote for an older version of a slot) is stale: the timer checks each
entry against its slot when it comes due and drops it, so neither a deferral nor a restore has
to delete entries ahead of the timer.
"""

from __future__ import annotations

import struct
from typing import Any

from cfstream.codec import dumps, loads
from cfstream.scheduling.rules import Slot
from cfstream.scheduling.traces import Absorbed, WindowTrace
from cfstream.wire import FiredCall, trusted_call

SLOT_PREFIX = b"k:"
DUE_PREFIX = b"d:"
_DUE = struct.Struct(">Q")


def slot_key(key: bytes) -> bytes:
    return SLOT_PREFIX + key


def due_key(due_ms: int, key: bytes) -> bytes:
    return DUE_PREFIX + _DUE.pack(max(due_ms, 0)) + key


def parse_due_key(raw: bytes) -> tuple[int, bytes]:
    """(due_ms, call key) of a "d:" key."""
    start = len(DUE_PREFIX)
    (due,) = _DUE.unpack_from(raw, start)
    return due, raw[start + _DUE.size:]


def encode_slot(slot: Slot) -> bytes:
    data: dict[str, Any] = {"first_ms": slot.first_ms, "due_ms": slot.due_ms}
    if slot.call is not None:
        data["call"] = slot.call.to_dict()
    if slot.fired_id is not None:
        data["fired_id"] = slot.fired_id
        data["fired_submitted_ms"] = slot.fired_submitted_ms
        if slot.fired_attempt != 1:
            data["fired_attempt"] = slot.fired_attempt
    if slot.execution is not None:
        data["execution"] = slot.execution.to_dict()
    if slot.collected_bytes:
        data["collected_bytes"] = slot.collected_bytes
    if slot.latest_id is not None:  # keep="first" only: older slots have neither
        data["latest_ms"] = slot.latest_ms
        data["latest_id"] = slot.latest_id
    if slot.running_id is not None:  # if_running="after" only
        data["running_id"] = slot.running_id
        if slot.running_attempt != 1:
            data["running_attempt"] = slot.running_attempt
    if slot.trace is not None:  # a traced window, with the processor's tracing on
        data["trace"] = {"scheduled_ms": slot.trace.scheduled_ms,
                         "absorbed": [[a.id, a.traceparent, a.scheduled_ms, a.deferred_ms,
                                       a.reason, a.successor] for a in slot.trace.absorbed]}
    return dumps(data)


def decode_slot(raw: bytes | None) -> Slot | None:
    if raw is None:
        return None
    data = loads(raw)
    call = data.get("call")
    execution = data.get("execution")
    return Slot(
        call=trusted_call(call) if call is not None else None,
        first_ms=data["first_ms"],
        due_ms=data["due_ms"],
        fired_id=data.get("fired_id"),
        fired_submitted_ms=data.get("fired_submitted_ms"),
        fired_attempt=data.get("fired_attempt") or 1,
        execution=(FiredCall(trusted_call(execution), execution["due_ms"],
                             execution["fired_ms"]) if execution is not None else None),
        latest_ms=data.get("latest_ms"),
        latest_id=data.get("latest_id"),
        collected_bytes=data.get("collected_bytes", 0),
        running_id=data.get("running_id"),
        running_attempt=data.get("running_attempt") or 1,
        trace=_trace(data.get("trace")),
    )


def _trace(data: dict[str, Any] | None) -> WindowTrace | None:
    if data is None:
        return None
    return WindowTrace(data["scheduled_ms"], tuple(Absorbed(*item) for item in data["absorbed"]))


def slot_timer(raw: bytes) -> tuple[int, str]:
    """(due_ms, timer id) of an encoded slot, read without building it (the due index rebuild
    reads every slot of a partition)."""
    data = loads(raw)
    call = data.get("call")
    return data["due_ms"], call["id"] if call is not None else data["fired_id"]
