"""The records cfstream puts on Kafka; JSON Schemas for them are in ``cfstream/schemas/``.

Calls topic (key: the call's key, see :attr:`Call.key`), one of:
    {"v": 1, "kind": "call", "id", "task", "args", "kwargs", "submitted_ms",
     "delay_ms", "defer_key", "max_wait_ms"}
    ... with "v": 2 and "leading": true, "keep": "first", "collect": {"max_calls",
    "max_bytes"} and/or "if_running": "after" (deferring modes)
    {"v": 1, "kind": "tick", "id"}       (the processor's own timer record)
    {"v": 1, "kind": "cancel", "id"}     (cancel the pending call with this id)
    {"v": 1, "kind": "finished", "id", "attempt"}  (a worker: this execution's run ended)
Executions topic (same key): a call plus "due_ms" and "fired_ms".
A call or execution may carry "traceparent" (W3C Trace Context); an invalid one is ignored.
Events topic (key: execution id): {"v": 1, "type", "id", "task", "defer_key", "ts_ms", ...}.

``modes.py``: a call's deferring modes and their checks; ``records.py``: the records as cfstream
writes them; ``reading.py``: records read and checked; ``events.py``: events and dead letters.
"""

from cfstream.wire.events import (
    EVENT_RANK,
    EVENT_TYPES,
    TERMINAL_EVENTS,
    DeadLetter,
    dead_letter,
    event,
    event_order,
)
from cfstream.wire.modes import (
    COLLECT_BYTES_LIMIT,
    COLLECT_CALLS_LIMIT,
    IF_RUNNING_VALUES,
    KEEP_VALUES,
    MAX_COLLECT_BYTES,
    MAX_COLLECT_CALLS,
    NO_MODES,
    Collect,
    Modes,
    ModesError,
    argument_bytes,
)
from cfstream.wire.reading import (
    MAX_CLOCK_SKEW_MS,
    READ_VERSIONS,
    InvalidRecord,
    call_from_dict,
    control_from_dict,
    execution_from_dict,
    parse_json,
    traceparent,
    trusted_call,
)
from cfstream.wire.records import (
    KEY_SEPARATOR,
    MAX_DELAY_MS,
    MODES_VERSION,
    SCHEMA_VERSION,
    Call,
    CallRecords,
    Control,
    FiredCall,
    record_key,
)

__all__ = [
    "COLLECT_BYTES_LIMIT",
    "COLLECT_CALLS_LIMIT",
    "EVENT_RANK",
    "EVENT_TYPES",
    "IF_RUNNING_VALUES",
    "KEEP_VALUES",
    "KEY_SEPARATOR",
    "MAX_CLOCK_SKEW_MS",
    "MAX_COLLECT_BYTES",
    "MAX_COLLECT_CALLS",
    "MAX_DELAY_MS",
    "MODES_VERSION",
    "NO_MODES",
    "READ_VERSIONS",
    "SCHEMA_VERSION",
    "TERMINAL_EVENTS",
    "Call",
    "CallRecords",
    "Collect",
    "Control",
    "DeadLetter",
    "FiredCall",
    "InvalidRecord",
    "Modes",
    "ModesError",
    "argument_bytes",
    "call_from_dict",
    "control_from_dict",
    "dead_letter",
    "event",
    "event_order",
    "execution_from_dict",
    "parse_json",
    "record_key",
    "traceparent",
    "trusted_call",
]
