"""Standby copies: partitions this replica does not own, kept up to date from their changelogs.

A standby DB is the DB its owner writes, copied record by record from the changelog
(:mod:`cfstream.processor.changelog`), in the same directory a takeover opens. When the
partition comes here, its restore replays only what the copy has yet to read. Which partitions
to copy is the loop's choice (:mod:`cfstream.processor.placement`); this module only keeps the
copies. Everything here runs in the restore thread, the one writer of every DB that is not
owned, and that thread serves restores first: standbys are tailed only while no restore waits.
The copies' consumer can stop fetching after a broker restart (librdkafka#5153): one that reads
nothing while its changelogs move on is replaced (:mod:`cfstream.kafka.stall`).

A copy the replica has no DB for on disk starts only after ``standby_delay`` seconds of being
wanted, so a rolling restart, which moves partitions for a few seconds, does not make the
survivors copy each other's partitions in full for nothing. A DB found on disk with state in it
is tailed at once.
A DB on disk that is neither owned, copied nor wanted for CLEANUP_DELAY is deleted (Kafka
Streams' state.cleanup.delay.ms), so a replica's disk holds what it serves, not every partition
it ever held.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Collection
from dataclasses import dataclass

import rocksdict
from confluent_kafka import Consumer, KafkaError, TopicPartition

from cfstream.kafka import fetching
from cfstream.kafka.config import consumer_config
from cfstream.kafka.retry import watermarks
from cfstream.kafka.stall import Stall
from cfstream.processor import changelog
from cfstream.processor.db import Databases, close
from cfstream.settings import Settings

logger = logging.getLogger(__name__)

BATCH_RECORDS = 10_000
# A copy at its changelog's end records so this often, so an idle one is not taken for a DB too
# old to trust (changelog.MAX_DB_AGE_MS) when it is promoted.
TOUCH_INTERVAL = 600.0
CLEANUP_DELAY = 600.0
CLEANUP_INTERVAL = 60.0


@dataclass
class Copy:
    db: rocksdict.Rdict
    position: int  # the next changelog offset to apply
    touched: float = 0.0  # monotonic time its checkpoint was last written


class Standbys:
    """The standby copies of one replica, tailed by one consumer (no group)."""

    def __init__(self, settings: Settings, databases: Databases) -> None:
        self.topic = settings.changelog_topic
        self.delay = settings.standby_delay
        self.databases = databases
        self.settings = settings
        self.copies: dict[int, Copy] = {}
        # Set by the loop, read here: the partitions to copy (never the ones owned here).
        self.wanted: frozenset[int] = frozenset()
        self.warm = False  # start cold copies without waiting (a replica about to join)
        # The copies' lags as of the last tail, for other threads: confluent-kafka serializes
        # calls on one client, so they must not ask the consumer this thread polls all along.
        self.lags: dict[int, int] = {}
        self._since: dict[int, float] = {}  # when a partition with no DB on disk was wanted
        self._unused: dict[int, float] = {}  # when a DB on disk was last seen in use
        self._next_cleanup = 0.0
        self._consumer: Consumer | None = None
        self._stall = Stall(self.topic)

    def want(self, partitions: Collection[int], warm: bool = False) -> None:
        """Copy these partitions from now on (any thread)."""
        self.warm = warm
        self.wanted = frozenset(partitions)

    # -- in the restore thread ---------------------------------------------------------------

    def reconcile(self, owned: Collection[int]) -> None:
        """Open the copies wanted and not yet kept; close the ones no longer wanted. A copy of a
        partition owned here now stays open: its restore takes it (:meth:`take`)."""
        wanted = self.wanted
        for partition in list(self.copies):
            if partition not in wanted and partition not in owned:
                self._close(partition)
        now = time.monotonic()
        for partition in list(self._since):
            if partition not in wanted:
                del self._since[partition]
        for partition in wanted:
            if partition in self.copies or partition in owned:
                continue
            if not self.warm and not self.databases.holds_state(partition):
                since = self._since.setdefault(partition, now)
                if now - since < self.delay:
                    continue
            self._open(partition)
        if now >= self._next_cleanup:
            self._next_cleanup = now + CLEANUP_INTERVAL
            self._clean_up(set(wanted) | set(owned) | set(self.copies), now)

    def tail(self, timeout: float) -> int:
        """Apply what the changelog has for the copies, waiting up to ``timeout`` for it.
        Returns the records applied."""
        if not self.copies:
            self.lags = {}
            return 0
        consumer = self._consumer_for_copies()
        first = consumer.poll(timeout)
        if first is None:
            self.lags = self._lag()
            self._touch_idle()
            if self._stall.replace(consumer, {p: c.position for p, c in self.copies.items()}):
                self._read_on()
            return 0
        by_partition: dict[int, list[tuple[bytes, bytes | None, int]]] = {}
        for record in [first, *consumer.consume(BATCH_RECORDS - 1, 0)]:
            error = record.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    logger.warning("%s: %s", self.topic, error)
                continue
            partition = record.partition()
            if partition in self.copies:
                by_partition.setdefault(partition, []).append(
                    (record.key() or b"", record.value(), record.offset()))  # type: ignore[arg-type]
        if by_partition:
            self._stall.read()
        applied = 0
        for partition, records in by_partition.items():
            copy = self.copies[partition]
            records = [r for r in records if r[2] >= copy.position]  # a seek's leftovers
            last = changelog.apply(copy.db, records)
            if last is not None:
                copy.position, copy.touched = last + 1, time.monotonic()
                applied += len(records)
        self.lags = self._lag()
        return applied

    def _lag(self) -> dict[int, int]:
        """Changelog records each copy has yet to apply (from the last fetch's high watermark;
        -1 while unknown)."""
        assert self._consumer is not None  # noqa: S101 - only with copies
        lags = {}
        for partition, copy in self.copies.items():
            _, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, partition),
                                                           cached=True)
            lags[partition] = max(high - copy.position, 0) if high >= 0 else -1
        return lags

    def take(self, partition: int) -> rocksdict.Rdict | None:
        """The partition's copy, handed over to its restore (it becomes owned here), or None."""
        copy = self.copies.pop(partition, None)
        if copy is None:
            return None
        self._unassign(partition)
        return copy.db

    def pause(self, paused: bool) -> None:
        """Stop (or start again) fetching for the copies while a restore runs."""
        consumer = self._consumer
        if consumer is None or not self.copies:
            return
        if paused:
            consumer.pause([TopicPartition(self.topic, p) for p in self.copies])
        else:
            fetching.resume(consumer, [TopicPartition(self.topic, p, copy.position)
                                       for p, copy in self.copies.items()])
            self._stall.began()  # nothing was fetched meanwhile

    def close(self) -> None:
        for partition in list(self.copies):
            self._close(partition)
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _clean_up(self, used: set[int], now: float) -> None:
        """Delete the DBs on disk unused for CLEANUP_DELAY."""
        for partition in self.databases.on_disk():
            if partition in used:
                self._unused.pop(partition, None)
                continue
            since = self._unused.setdefault(partition, now)
            if now - since >= CLEANUP_DELAY:
                shutil.rmtree(self.databases.path(partition), ignore_errors=True)
                del self._unused[partition]
                logger.info("%s[%d]: deleted the local state, unused for %.0fs", self.topic,
                            partition, now - since)

    def _open(self, partition: int) -> None:
        name = f"{self.topic}[{partition}]"
        try:
            db = self.databases.open(partition)
        except Exception as exc:  # e.g. still closing after a revoke: tried again next time
            logger.debug("%s: standby copy not opened yet: %s", name, exc)
            return
        try:
            consumer = self._consumer_for_copies()
            low, high = watermarks(consumer, self.topic, partition, timeout=10)
            start = changelog.start_offset(db, name, low, high)
        except Exception as exc:
            close(db)
            logger.warning("%s: standby copy not started: %s", name, exc)
            return
        self.copies[partition] = Copy(db, start, time.monotonic())
        self._since.pop(partition, None)
        consumer.incremental_assign([TopicPartition(self.topic, partition, start)])
        self._stall.began()
        logger.info("%s: standby copy from offset %d (the changelog ends at %d)", name, start,
                    high)

    def _read_on(self) -> None:
        """A new consumer for the copies, from where each stands (the old one stopped)."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self._consumer_for_copies().incremental_assign(
            [TopicPartition(self.topic, p, copy.position) for p, copy in self.copies.items()])
        self._stall.began()

    def _close(self, partition: int) -> None:
        copy = self.copies.pop(partition)
        self._unassign(partition)
        close(copy.db)
        logger.info("%s[%d]: standby copy closed", self.topic, partition)

    def _unassign(self, partition: int) -> None:
        if self._consumer is not None:
            self._consumer.incremental_unassign([TopicPartition(self.topic, partition)])

    def _touch_idle(self) -> None:
        """Write the checkpoint time of the copies at their changelog's end (see TOUCH_INTERVAL)."""
        now = time.monotonic()
        for partition, lag in self.lags.items():
            copy = self.copies[partition]
            if lag == 0 and now - copy.touched >= TOUCH_INTERVAL:
                changelog.touch(copy.db)
                copy.touched = now

    def _consumer_for_copies(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(consumer_config(self.settings, None, **{
                "enable.partition.eof": False,
                "fetch.wait.max.ms": 100,
                "queued.max.messages.kbytes": 16_384,
            }))
        return self._consumer
