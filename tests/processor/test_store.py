"""The due index rebuild and the marker that lets a restart skip it (cfstream.processor.store)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import rocksdict

from cfstream.processor import state
from cfstream.processor.store import (
    FAUST_OFFSET_KEY,
    index_current,
    rebuild_due_index,
    record_offset,
)
from cfstream.scheduling.rules import Slot
from cfstream.wire import Call


@pytest.fixture
def db(tmp_path: Path) -> Iterator[rocksdict.Rdict]:
    db = rocksdict.Rdict(str(tmp_path / "db"), rocksdict.Options(raw_mode=True))
    yield db
    db.close()


def slot(call_id: str, due_ms: int) -> Slot:
    call = Call(id=call_id, task="t:f", args=[], kwargs={}, submitted_ms=0, delay_ms=due_ms,
                defer_key=call_id, max_wait_ms=None)
    return Slot(call=call, first_ms=0, due_ms=due_ms)


def due_index(db: rocksdict.Rdict) -> dict[bytes, bytes]:
    return {k: v for k, v in db.items() if k.startswith(state.DUE_PREFIX)}


def test_rebuild_replaces_the_index_with_one_made_from_the_slots(db: rocksdict.Rdict) -> None:
    db.put(state.slot_key(b"a"), state.encode_slot(slot("a", 10)))
    marker = Slot(call=None, first_ms=0, due_ms=99, fired_id="b0", fired_submitted_ms=0)
    db.put(state.slot_key(b"b"), state.encode_slot(marker))
    db.put(state.due_key(5, b"gone"), b"stale")  # a key restored away
    db.put(FAUST_OFFSET_KEY, b"7")
    assert not index_current(db)

    assert list(rebuild_due_index(db))[-1] == 2
    assert due_index(db) == {state.due_key(10, b"a"): b"a", state.due_key(99, b"b"): b"b0"}
    assert index_current(db)


def test_the_marker_follows_the_processors_writes_not_a_restore(db: rocksdict.Rdict) -> None:
    list(rebuild_due_index(db))
    assert not index_current(db)  # nothing on the changelog yet: nothing to claim
    record_offset(db, 9, indexed=True)
    assert index_current(db)
    record_offset(db, 10, indexed=False)  # written before the index was rebuilt
    assert not index_current(db)
    record_offset(db, 11, indexed=True)
    db.put(FAUST_OFFSET_KEY, b"12")  # faust (or the restore) applied changelog records
    assert not index_current(db)
