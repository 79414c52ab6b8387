"""One RocksDB per calls partition, all sharing one block cache and one write-buffer budget.

RocksDB's defaults give each DB its own cache and memtables, so memory would grow with the
partition count; here a replica's RocksDB memory is bounded by BLOCK_CACHE_BYTES plus
WRITE_BUFFER_BYTES whatever it owns.

Besides the slots and the due index (:mod:`cfstream.processor.state`), a DB holds the offset of
the last changelog record it reflects, written in the same WriteBatch as the data: a replica
restarting on its disk restores only what came after it.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

import rocksdict

from cfstream.errors import ConfigurationError

# Shared by every partition of a replica: hot slots and index blocks; the rest stays on disk.
BLOCK_CACHE_BYTES = 64 * 1024 * 1024
# Memtables of all partitions together; a flush to disk when full, not a stall.
WRITE_BUFFER_BYTES = 64 * 1024 * 1024
# Per partition: one memtable filling while one flushes.
PARTITION_WRITE_BUFFER_BYTES = 16 * 1024 * 1024
MAX_OPEN_FILES = 256
# No write-ahead log: the changelog is the log. A crash loses at most the memtables, back to a
# consistent older state (the changelog offset is in the same WriteBatch as the data) that the
# restore then brings up to date. Measured: 2.5 -> 1.5 us a key written.
WRITE_OPTIONS = rocksdict.WriteOptions()
# A property at run time; rocksdict's stub declares a method.
WRITE_OPTIONS.disable_wal = True  # type: ignore[method-assign,assignment]
# The last changelog offset the DB reflects, and when it was written (wall clock, ms).
CHANGELOG_OFFSET_KEY = b"__cfstream\0changelog__"
WRITTEN_MS_KEY = b"__cfstream\0written__"


class Databases:
    """Opens the partition DBs of one replica under ``state_dir`` with the shared options."""

    def __init__(self, state_dir: Path, topic: str) -> None:
        self.root = state_dir / topic
        self.root.mkdir(parents=True, exist_ok=True)
        # One replica per state dir: a second one would fail to open every DB, again and again.
        self._lock = (self.root / "LOCK").open("a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise ConfigurationError(
                f"{state_dir} is in use by another processor replica: give each replica its "
                "own CFSTREAM_STATE_DIR") from None
        cache = rocksdict.Cache(BLOCK_CACHE_BYTES)
        table = rocksdict.BlockBasedOptions()
        table.set_block_cache(cache)
        table.set_bloom_filter(10, False)  # slot gets miss often (a key's first call)
        # Index and filters in the cache, so memory is bounded by it and not by key count; split
        # in partitions under a pinned top level, or a seek at 1M keys would load a whole
        # multi-MiB index block again (measured: 500 us a seek, 11 us partitioned).
        table.set_cache_index_and_filter_blocks(True)
        table.set_index_type(rocksdict.BlockBasedIndexType.two_level_index_search())
        table.set_partition_filters(True)
        table.set_pin_top_level_index_and_filter(True)
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_block_based_table_factory(table)
        options.set_write_buffer_manager(
            rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
                WRITE_BUFFER_BYTES, False, cache))
        options.set_write_buffer_size(PARTITION_WRITE_BUFFER_BYTES)
        options.set_max_write_buffer_number(2)
        options.set_max_open_files(MAX_OPEN_FILES)
        options.set_keep_log_file_num(2)
        # Fired calls delete index entries: compact files that fill up with tombstones.
        options.add_compact_on_deletion_collector_factory(10_000, 5_000, 0.5)
        self.options = options

    def path(self, partition: int) -> Path:
        return self.root / f"{partition}.db"

    def holds_state(self, partition: int) -> bool:
        """Whether the partition's DB on disk holds anything: a restore cancelled before its
        first flush leaves a DB directory with no table file, which is as good as none."""
        return any(self.path(partition).glob("*.sst"))

    def on_disk(self) -> list[int]:
        """The partitions with a DB under the root."""
        return sorted(int(path.name[:-3]) for path in self.root.glob("*.db")
                      if path.name[:-3].isdigit())

    def open(self, partition: int) -> rocksdict.Rdict:
        return rocksdict.Rdict(str(self.path(partition)), self.options)



def close(db: rocksdict.Rdict) -> None:
    """Persist the memtables (there is no log to replay them from) and close."""
    db.flush()
    db.close()


def changelog_offset(db: rocksdict.Rdict) -> int | None:
    """The last changelog offset ``db`` reflects, None if it reflects none."""
    held = db.get(CHANGELOG_OFFSET_KEY)
    return int(held) if held is not None else None


def written_ms(db: rocksdict.Rdict) -> int | None:
    """When ``db`` last took a write from its owner or a restore (ms since the epoch)."""
    held = db.get(WRITTEN_MS_KEY)
    return int(held) if held is not None else None
