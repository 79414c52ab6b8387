"""Changelog records into a partition's DB: what a restore and a standby copy both write.

A changelog record is a slot (``k:`` + call key -> the slot's JSON) or its tombstone. Applied
here, each also moves the slot's due index entry: the entry of the slot it replaces is deleted
and the new slot's is put. So a DB kept up by the changelog alone, for days as a standby, holds
exactly one index entry per slot, and the timer of the replica that takes it over never walks
entries that piled up while nobody fired them. The DB's checkpoint (the last changelog offset it
reflects, and when it was written) goes into the same WriteBatch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import rocksdict

from cfstream.clock import now_ms
from cfstream.processor import state
from cfstream.processor.db import (
    CHANGELOG_OFFSET_KEY,
    WRITE_OPTIONS,
    WRITTEN_MS_KEY,
    changelog_offset,
    written_ms,
)

logger = logging.getLogger(__name__)

# Kafka's default delete.retention.ms is a day: a DB last written longer ago than half of that
# may miss a tombstone that compaction has removed since, so it starts over.
MAX_DB_AGE_MS = 12 * 3600 * 1000


def start_offset(db: rocksdict.Rdict, name: str, low: int, high: int) -> int:
    """The changelog offset to read ``db`` on from, the changelog holding ``low``..``high - 1``.

    A DB that claims records the topic does not have (the topic was recreated), or that is
    older than the changelog's tombstones are kept (a deletion may have been compacted away), is
    emptied and read from the start. ``name`` (topic[partition]) is for the log.
    """
    held = changelog_offset(db)
    written = written_ms(db)
    reason = None
    if held is not None and held >= high:
        reason = f"it holds changelog offset {held} and the changelog ends at {high}"
    elif held is not None and written is not None and now_ms() - written > MAX_DB_AGE_MS:
        reason = "it was last written over 12 h ago (tombstones may be gone)"
    if reason is not None:
        logger.warning("%s: starting the local state over: %s", name, reason)
        clear(db)
        held = None
    return max(held + 1 if held is not None else 0, low)


def clear(db: rocksdict.Rdict) -> None:
    """Delete every key of ``db`` (its files stay open), and compact them away.

    RocksDB's tailing iterator (``partition.DUE_SCAN``) ignores a range deletion in the memtable
    or level 0 (measured: every deleted key seen again). The compaction drops the deleted keys,
    and the range deletion with them or into a level below 0, where that iterator fails with an
    error and the partition's timer takes plain iterators instead."""
    it = db.iter()
    it.seek_to_first()
    first = it.key() if it.valid() else None
    it.seek_to_last()
    last = it.key() if it.valid() else None
    del it
    if first is not None and last is not None:
        db.delete_range(first, last + b"\0")
        db.compact_range(first, last + b"\0")


def apply(db: rocksdict.Rdict, records: Iterable[tuple[bytes, bytes | None, int]]) -> int | None:
    """Write ``(key, value or None, offset)`` changelog records, in offset order, to ``db`` in
    one WriteBatch with the checkpoint. Returns the last offset written (None: no records)."""
    batch = rocksdict.WriteBatch(raw_mode=True)
    latest: dict[bytes, bytes | None] = {}  # slot key -> its value as of this batch
    last = None
    for key, value, offset in records:
        last = offset
        if key.startswith(state.SLOT_PREFIX):
            before = latest[key] if key in latest else db.get(key)
            latest[key] = value
            _move_index(batch, key[len(state.SLOT_PREFIX):], before, value)
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    if last is None:
        return None
    batch.put(CHANGELOG_OFFSET_KEY, str(last).encode())
    batch.put(WRITTEN_MS_KEY, str(now_ms()).encode())
    db.write(batch, WRITE_OPTIONS)
    return last


def touch(db: rocksdict.Rdict) -> None:
    """Record that ``db`` is up to date with its changelog now (it took nothing new): a DB that
    reached its changelog's end missed no tombstone, however long ago its last record came."""
    db.put(WRITTEN_MS_KEY, str(now_ms()).encode(), WRITE_OPTIONS)


def _move_index(batch: rocksdict.WriteBatch, call_key: bytes, before: bytes | None,
                after: bytes | None) -> None:
    old = state.slot_timer(before) if before is not None else None
    new = state.slot_timer(after) if after is not None else None
    if old == new:
        return
    if old is not None:
        batch.delete(state.due_key(old[0], call_key))
    if new is not None:
        batch.put(state.due_key(new[0], call_key), new[1].encode())
