"""The processor's writes: its RocksDB partitions directly, every record through one producer.

faust owns the table: one RocksDB per partition, the changelog topic, restore and standbys. Its
Table API, though, sends every write through aiokafka one record at a time, which held a replica
to a few thousand calls/s. So the agent writes the partition's RocksDB itself and puts the same
bytes on the changelog with librdkafka: raw key and value, no value for a delete, exactly what
faust's restore applies. The delivered changelog offset goes where faust keeps it in each
RocksDB, so a replica restarting on its disk restores only what it missed.

The due index (``d:`` keys) is derived from the slots: it stays out of the changelog and is
rebuilt whenever a partition becomes active here (after a restore it would be missing or stale).

A batch's writes collect in :class:`Writes` (reads see them) and reach RocksDB in one
WriteBatch per partition. RocksDB's write-ahead log stays on: faust writes the restore offset
with it, and an offset that survives a crash its data did not would skip the restore (seen in
the chaos run, which lost calls when the log was off).

The agent flushes the producer before faust may commit the records it read (the records of a
batch are acknowledged after :meth:`Outputs.flush`), so a crash replays calls whose effects were
lost, never the other way round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import rocksdict
from confluent_kafka import KafkaError, Message, Producer

from cfstream.errors import CfStreamError
from cfstream.kafka.config import producer_config
from cfstream.processor import state
from cfstream.settings import Settings

logger = logging.getLogger(__name__)

# Where faust keeps a partition's last changelog offset inside its RocksDB (faust.stores.rocksdb).
FAUST_OFFSET_KEY = b"__faust\0offset__"
# The changelog offset the partition's due index matches, beside it: equal to faust's offset,
# nothing was restored around the index since, and a restart need not rebuild it.
INDEX_OFFSET_KEY = b"__cfstream\0indexed__"


class OutputError(CfStreamError):
    """A record the processor produced was refused for good (not a broker outage: those wait)."""


class Outputs:
    """One librdkafka producer for the changelog, executions, events, ticks and dead letters."""

    def __init__(self, settings: Settings, changelog: str) -> None:
        self.changelog_topic = changelog
        self.producer = Producer(producer_config(
            settings,
            on_delivery=self._delivered,
            # A broker outage holds records until it is back, never drops them.
            **{"message.timeout.ms": 0, "linger.ms": 2},
        ))
        self.persisted: dict[int, int] = {}  # changelog partition -> last delivered offset
        self.errors: list[str] = []

    def produce(self, topic: str, key: bytes | None, value: bytes | None,
                partition: int = -1,
                headers: list[tuple[str, str | bytes | None]] | None = None) -> None:
        """Queue a record (``partition`` -1: the key's, by murmur2)."""
        try:
            self.producer.produce(topic, value, key, partition, headers=headers)
        except BufferError:  # the local queue is full: let deliveries drain it, then again
            while True:
                self.producer.poll(0.05)
                try:
                    self.producer.produce(topic, value, key, partition, headers=headers)
                    return
                except BufferError:
                    continue

    async def flush(self) -> None:
        """Wait until everything produced so far is on the broker (off the event loop)."""
        if len(self.producer) == 0:
            self.producer.poll(0)
            return
        await asyncio.get_running_loop().run_in_executor(None, self._flush)

    def _flush(self) -> None:
        while self.producer.flush(1.0) > 0:
            pass

    def take_errors(self) -> list[str]:
        errors, self.errors = self.errors, []
        return errors

    def take_persisted(self) -> Iterator[tuple[int, int]]:
        persisted, self.persisted = self.persisted, {}
        return iter(persisted.items())

    def close(self, timeout: float = 10.0) -> None:
        """Flush what is left (ticks sent by the timer since the last batch) and stop."""
        left = self.producer.flush(timeout)
        if left:
            logger.warning("%d records not delivered at stop: their calls are read again from "
                           "the last commit, lost ticks are sent again", left)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        # Called from flush/poll, possibly in the executor's thread: only record what happened.
        if err is not None:
            self.errors.append(f"{msg.topic()}[{msg.partition()}]: {err}")
            return
        if msg.topic() == self.changelog_topic:
            partition, offset = msg.partition(), msg.offset()
            if partition is not None and offset is not None:
                self.persisted[partition] = max(offset, self.persisted.get(partition, -1))


class Writes:
    """One batch's changes to the partitions' RocksDBs: read through, then written at once."""

    def __init__(self) -> None:
        self.changes: dict[int, dict[bytes, bytes | None]] = {}

    def get(self, db: Any, partition: int, key: bytes) -> bytes | None:
        changes = self.changes.get(partition)
        if changes is not None and key in changes:
            return changes[key]
        value: bytes | None = db.get(key)
        return value

    def set(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Set ``key`` (None: delete it) when the batch is applied."""
        self.changes.setdefault(partition, {})[key] = value

    def apply(self, dbs: Mapping[int, Any]) -> None:
        """Write the changes, one WriteBatch per partition still held here."""
        for partition, changes in self.changes.items():
            db = dbs.get(partition)
            if db is None:  # revoked during the batch: the new owner reads its calls again
                continue
            batch = rocksdict.WriteBatch(raw_mode=True)
            for key, value in changes.items():
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
            db.write(batch)
        self.changes.clear()


def index_current(db: Any) -> bool:
    """Whether the due index matches the slots (nothing was restored since it was last)."""
    held = db.get(INDEX_OFFSET_KEY)
    return held is not None and held == db.get(FAUST_OFFSET_KEY)


def record_offset(db: Any, offset: int, indexed: bool) -> None:
    """Store the changelog offset the partition holds, and with ``indexed`` that its due index
    matches it (the processor's own writes keep the index)."""
    batch = rocksdict.WriteBatch(raw_mode=True)
    batch.put(FAUST_OFFSET_KEY, str(offset).encode())
    if indexed:
        batch.put(INDEX_OFFSET_KEY, str(offset).encode())
    db.write(batch)


def rebuild_due_index(db: Any) -> Iterator[int]:
    """Replace the ``d:`` keys of a partition with ones made from its slots.

    A generator that yields after each chunk, so the caller can give the event loop a turn.
    """
    db.delete(INDEX_OFFSET_KEY)  # a rebuild cut short leaves no claim behind
    # Every "d:" key, as one range deletion: the byte after ":" is ";".
    db.delete_range(state.DUE_PREFIX, state.DUE_PREFIX[:-1] + b";")
    yield 0
    batch, count = rocksdict.WriteBatch(raw_mode=True), 0
    it = db.iter()
    it.seek(state.SLOT_PREFIX)
    while it.valid() and it.key().startswith(state.SLOT_PREFIX):
        due_ms, timer_id = state.slot_timer(it.value())
        key = it.key()[len(state.SLOT_PREFIX):]
        batch.put(state.due_key(due_ms, key), timer_id.encode())
        count += 1
        if count % 10_000 == 0:
            db.write(batch)
            batch = rocksdict.WriteBatch(raw_mode=True)
            yield count
        it.next()
    held = db.get(FAUST_OFFSET_KEY)
    if held is not None:  # the processor's writes since the start keep the index: it matches
        batch.put(INDEX_OFFSET_KEY, held)
    db.write(batch)
    yield count
