"""Changelog records into a DB (cfstream.processor.changelog), on a real RocksDB."""

from __future__ import annotations

import random
from pathlib import Path

import rocksdict

from cfstream.clock import now_ms
from cfstream.processor import changelog, state
from cfstream.processor.db import (
    CHANGELOG_OFFSET_KEY,
    WRITTEN_MS_KEY,
    Databases,
    changelog_offset,
    written_ms,
)
from cfstream.scheduling.rules import Slot
from cfstream.wire import Call

Record = tuple[bytes, bytes | None, int]


def slot(key: str, due: int, version: int | None = None, pending: bool = True) -> bytes:
    """A slot of ``key`` due at ``due``: a pending call (its id names ``version``, else
    ``due``), or the marker of a fired one."""
    call = Call(id=f"id-{key}-{due if version is None else version}", task="t", args=[],
                kwargs={}, submitted_ms=due, defer_key=key)
    if pending:
        return state.encode_slot(Slot(call=call, first_ms=due, due_ms=due))
    return state.encode_slot(Slot(call=None, first_ms=due, due_ms=due, fired_id=call.id,
                                  fired_submitted_ms=due))


def open_db(tmp_path: Path) -> rocksdict.Rdict:
    return Databases(tmp_path, "calls").open(0)


def workload(seed: int, records: int, keys: int) -> list[Record]:
    """Slots replaced (often at the same due time), fired and deleted, in offset order."""
    rng = random.Random(seed)
    out: list[Record] = []
    for offset in range(records):
        key = f"key-{rng.randrange(keys)}"
        roll = rng.random()
        if roll < 0.15:
            value = None
        else:
            due = rng.choice([1_000, 2_000, rng.randrange(10_000)])
            value = slot(key, due, offset, pending=roll < 0.85)
        out.append((state.slot_key(key.encode()), value, offset))
    return out


def contents(db: rocksdict.Rdict) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
    slots, index = {}, {}
    for key, value in db.items():
        if key.startswith(state.SLOT_PREFIX):
            slots[key] = value
        elif key.startswith(state.DUE_PREFIX):
            index[key] = value
    return slots, index


def expected(records: list[Record]) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
    latest: dict[bytes, bytes | None] = {}
    for key, value, _ in records:
        latest[key] = value
    slots = {k: v for k, v in latest.items() if v is not None}
    index = {}
    for key, value in slots.items():
        due, timer_id = state.slot_timer(value)
        index[state.due_key(due, key[len(state.SLOT_PREFIX):])] = timer_id.encode()
    return slots, index


def test_a_db_kept_by_the_changelog_has_one_index_entry_per_slot(tmp_path: Path) -> None:
    for seed in range(5):
        records = workload(seed, 3_000, keys=200)
        db = rocksdict.Rdict(str(tmp_path / f"{seed}.db"), Databases(tmp_path, "c").options)
        rng = random.Random(seed)
        at = 0
        while at < len(records):  # batches of every size, keys repeated within them
            size = rng.choice([1, 2, 7, 50, 400])
            assert changelog.apply(db, records[at:at + size]) == min(at + size, len(records)) - 1
            at += size
        assert contents(db) == expected(records), f"seed {seed}"
        assert changelog_offset(db) == len(records) - 1
        db.close()


def test_the_checkpoint_is_written_with_the_data_and_empty_batches_write_nothing(
        tmp_path: Path) -> None:
    db = open_db(tmp_path)
    assert changelog.apply(db, []) is None
    assert db.get(CHANGELOG_OFFSET_KEY) is None and db.get(WRITTEN_MS_KEY) is None
    before = now_ms()
    assert changelog.apply(db, [(b"k:a", slot("a", 5, 1), 41)]) == 41
    assert changelog_offset(db) == 41
    assert (written_ms(db) or 0) >= before
    db.close()


def test_a_tombstone_takes_the_slot_s_index_entry_with_it(tmp_path: Path) -> None:
    db = open_db(tmp_path)
    changelog.apply(db, [(b"k:a", slot("a", 5, 1), 0)])
    changelog.apply(db, [(b"k:a", slot("a", 9, 2), 1), (b"k:a", None, 2)])
    assert contents(db) == ({}, {})
    db.close()


def test_start_offset_resumes_after_the_checkpoint_or_starts_over(tmp_path: Path) -> None:
    db = open_db(tmp_path)
    assert changelog.start_offset(db, "t[0]", low=0, high=10) == 0
    assert changelog.start_offset(db, "t[0]", low=3, high=10) == 3  # compacted or deleted below
    changelog.apply(db, [(b"k:a", slot("a", 5, 1), 6)])
    assert changelog.start_offset(db, "t[0]", low=0, high=10) == 7
    # The changelog ends before what the DB holds: the topic was recreated, start over.
    assert changelog.start_offset(db, "t[0]", low=0, high=5) == 0
    assert contents(db) == ({}, {}) and changelog_offset(db) is None
    # Last written long ago: tombstones may have been compacted away since, start over.
    changelog.apply(db, [(b"k:a", slot("a", 5, 1), 6)])
    db.put(WRITTEN_MS_KEY, str(now_ms() - changelog.MAX_DB_AGE_MS - 1).encode())
    assert changelog.start_offset(db, "t[0]", low=0, high=10) == 0
    # touch() says the DB is up to date now.
    changelog.apply(db, [(b"k:a", slot("a", 5, 1), 6)])
    db.put(WRITTEN_MS_KEY, str(now_ms() - changelog.MAX_DB_AGE_MS - 1).encode())
    changelog.touch(db)
    assert changelog.start_offset(db, "t[0]", low=0, high=10) == 7
    db.close()
