"""A processor partition, driven in memory: what it writes matches the schemas.
"""

from __future__ import annotations

import re
import time
from typing import Any

from schema_checks import assert_valid, check_event

from cfstream.codec import dumps
from cfstream.ids import new_execution_id
from cfstream.processor import state
from cfstream.processor.partition import PartitionTask
from cfstream.wire import (
    Call,
    Control,
    execution_from_dict,
)


def test_processor_records_match_the_schemas(partition_task: Any) -> None:
    task: PartitionTask = partition_task("schemas")
    outputs = task.outputs
    now = int(time.time() * 1000)

    def make(submitted: int, delay: int = 30, key: str | None = "k") -> Call:
        return Call(id=new_execution_id(submitted), task="tests.schemas:notify",
                    args=[{"$date": "2026-01-01"}], kwargs={}, submitted_ms=submitted,
                    delay_ms=delay, defer_key=key, max_wait_ms=None)

    first, second, old = make(now), make(now + 1), make(now - 1)
    at_once, to_cancel = make(now, delay=0, key=None), make(now, delay=60_000, key="other")
    cancel = Control("cancel", to_cancel.id, reason="user left")

    def turn(records: list[tuple[bytes, Any]], at: int) -> None:
        for key, value in records:
            raw = value if isinstance(value, bytes) or value is None else dumps(value)
            task.process(key, raw, task.position, None, at)
        task.horizon_ms = at
        task.fire_read(at)
        task.fire_due(at)
        task.stage()
        task.write(task.position)

    turn([(c.key.encode(), c.to_dict()) for c in (first, second, old, at_once, to_cancel)], now)
    turn([(to_cancel.key.encode(), cancel.to_dict())], now)
    turn([], now + 100)  # second is due
    bad = [
        (b"x", b"{not json"),
        (b"x", b"[1, 2]"),
        (b"x", {"v": 2, "id": "x"}),
        (b"x", {**first.to_dict(), "id": "x", "task": "a|b"}),
        (b"wrong", {**first.to_dict(), "id": "y"}),
        (b"x", {"v": 1, "kind": "pause", "id": "z"}),
        (b"x", None),
    ]
    turn(bad, now + 100)

    conf = task.settings
    executions = outputs.values(conf.executions_topic)
    assert [e["id"] for e in executions] == [at_once.id, second.id]
    for item, record in zip(outputs.of(conf.executions_topic), executions, strict=True):
        assert_valid("execution", record)
        assert item["key"] == execution_from_dict(record).call.key.encode()
    events = outputs.values(conf.events_topic)
    for item, record in zip(outputs.of(conf.events_topic), events, strict=True):
        check_event(record)
        assert item["key"] == (record["id"] or "invalid").encode()
    types = [(e["type"], e.get("reason")) for e in events]
    for expected in [("scheduled", None), ("deferred", "replaced"), ("deferred", "out_of_order"),
                     ("cancelled", "user left"), ("invalid", None)]:
        assert any(t == expected[0] and (expected[1] is None or r == expected[1])
                   for t, r in types), expected
    invalid = [e for e in events if e["type"] == "invalid"]
    assert len(invalid) == 7
    assert {e["id"] for e in invalid} == {None, "x", "y", "z"}
    assert len(outputs.of(conf.dead_letter_topic)) == 7
    for sent in outputs.of(conf.dead_letter_topic):
        headers = dict(sent["headers"])
        assert set(headers) == {"cfstream-reason", "cfstream-source"}
        assert re.fullmatch(rb"schemas\.calls:0:\d+", headers["cfstream-source"])
    slots = {state.slot_key(c.key.encode()) for c in (first, at_once, to_cancel)}
    assert slots <= set(task.db.keys())
    # Every slot write, and only those, went to the changelog; the due index stays local.
    changelog = outputs.of("changelog")
    assert slots <= {item["key"] for item in changelog}
    assert all(item["key"].startswith(state.SLOT_PREFIX) for item in changelog)
