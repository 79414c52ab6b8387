"""Bringing a newly assigned partition's DB up to its changelog, in a thread of its own.

The loop keeps processing the partitions it already runs while this thread opens a new one's
DB, reads the changelog from the offset the DB holds to the end, and writes it in WriteBatches
(the due index entries too, from each slot: stale ones are dropped by the timer later). Then
it hands the DB to the loop, and counts its pending calls on a snapshot for the gauge.

A DB that claims changelog records the topic does not have (the topic was recreated), or that
is older than the changelog's tombstones are kept (a deletion may have been compacted away), is
wiped and restored from the start.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import rocksdict
from confluent_kafka import Consumer, KafkaError, TopicPartition

from cfstream.clock import now_ms
from cfstream.kafka.config import consumer_config
from cfstream.kafka.retry import watermarks
from cfstream.processor import state
from cfstream.processor.db import (
    CHANGELOG_OFFSET_KEY,
    WRITE_OPTIONS,
    WRITTEN_MS_KEY,
    Databases,
    changelog_offset,
    close,
    written_ms,
)
from cfstream.settings import Settings

logger = logging.getLogger(__name__)

BATCH_RECORDS = 10_000
POLL_TIMEOUT = 0.5
PROGRESS_INTERVAL = 5.0
# Kafka's default delete.retention.ms is a day: a DB last written longer ago than half of that
# may miss a tombstone that compaction has removed since, so it starts over.
MAX_DB_AGE_MS = 12 * 3600 * 1000
COUNT_CHUNK = 50_000


class Cancelled(Exception):
    """The partition was revoked while its job ran."""


@dataclass
class PartitionJob:
    """A restore or a count of one partition's DB, run by the restore thread."""

    partition: int
    kind: str  # "restore" or "count"
    snapshot: Any = None
    started: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True, slots=True)
class Restored:
    partition: int
    db: rocksdict.Rdict | None  # None: the job failed or was cancelled
    records: int


@dataclass(frozen=True, slots=True)
class Counted:
    partition: int
    pending: int


class Restorer:
    """One thread running restore and count jobs in order; results go to ``results``."""

    def __init__(self, settings: Settings, databases: Databases,
                 progress: Callable[[int, int], None]) -> None:
        self.settings = settings
        self.databases = databases
        self.topic = settings.changelog_topic
        self.progress = progress  # (partition, records left) for the gauge
        self.results: queue.Queue[Restored | Counted] = queue.Queue()
        self.jobs: queue.Queue[PartitionJob | None] = queue.Queue()
        self.active: dict[int, PartitionJob] = {}
        self._lock = threading.Lock()  # a job starts, or is cancelled before it starts
        self._consumer: Consumer | None = None
        self._thread = threading.Thread(target=self._run, name="cfstream-restore", daemon=True)
        self._thread.start()

    def restore(self, partition: int) -> None:
        self._submit(PartitionJob(partition, "restore"))

    def count(self, partition: int, snapshot: Any) -> None:
        self._submit(PartitionJob(partition, "count", snapshot=snapshot))

    def cancel(self, partition: int) -> None:
        """Stop the partition's job; if it runs, wait until it no longer touches its DB (a
        queued one is skipped: waiting for it would wait for every job ahead of it)."""
        job = self.active.pop(partition, None)
        if job is None:
            return
        with self._lock:
            job.cancelled.set()
            started = job.started
            if not started:
                job.snapshot = None
        if started:
            job.done.wait()

    def close(self) -> None:
        for partition in list(self.active):
            self.cancel(partition)
        self.jobs.put(None)
        self._thread.join(timeout=30)

    def _submit(self, job: PartitionJob) -> None:
        self.cancel(job.partition)
        self.active[job.partition] = job
        self.jobs.put(job)

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            with self._lock:
                if job.cancelled.is_set():
                    continue
                job.started = True
            try:
                if job.kind == "restore":
                    self._restore(job)
                else:
                    self._count(job)
            except Cancelled:
                pass
            except Exception:
                logger.exception("%s[%d]: %s failed", self.topic, job.partition, job.kind)
                if job.kind == "restore":
                    self.results.put(Restored(job.partition, None, 0))
            finally:
                job.snapshot = None
                job.done.set()
        if self._consumer is not None:
            self._consumer.close()

    def _count(self, job: PartitionJob) -> None:
        it = job.snapshot.iter()
        it.seek(state.SLOT_PREFIX)
        pending = seen = 0
        while it.valid():
            key = it.key()
            if not key.startswith(state.SLOT_PREFIX):
                break
            pending += b'"call"' in it.value()
            seen += 1
            if seen % COUNT_CHUNK == 0 and job.cancelled.is_set():
                raise Cancelled
            it.next()
        del it
        self.results.put(Counted(job.partition, pending))

    def _restore(self, job: PartitionJob) -> None:
        partition = job.partition
        db = self.databases.open(partition)
        try:
            records = self._catch_up(db, job)
        except BaseException:
            close(db)
            raise
        self.results.put(Restored(partition, db, records))

    def _catch_up(self, db: rocksdict.Rdict, job: PartitionJob) -> int:
        partition = job.partition
        consumer = self._consumer_for_restores()
        low, high = watermarks(consumer, self.topic, partition, timeout=10)
        held = changelog_offset(db)
        written = written_ms(db)
        reason = None
        if held is not None and held >= high:
            reason = f"it holds changelog offset {held} and the changelog ends at {high}"
        elif held is not None and written is not None and now_ms() - written > MAX_DB_AGE_MS:
            reason = "it was last written over 12 h ago (tombstones may be gone)"
        if reason is not None:
            logger.warning("%s[%d]: starting the local state over: %s", self.topic, partition,
                           reason)
            _clear(db)
            held = None
        start = max(held + 1 if held is not None else 0, low)
        if start >= high:
            return 0
        total = high - start
        logger.info("%s[%d]: restoring %d changelog records (offsets %d..%d)", self.topic,
                    partition, total, start, high - 1)
        consumer.assign([TopicPartition(self.topic, partition, start)])
        try:
            applied = self._apply(consumer, db, job, start, high)
        finally:
            consumer.unassign()
        self.progress(partition, 0)
        return applied

    def _apply(self, consumer: Consumer, db: rocksdict.Rdict, job: PartitionJob, start: int,
               high: int) -> int:
        partition, total = job.partition, high - start
        began = last_report = time.monotonic()
        applied, position = 0, start
        while position < high:
            if job.cancelled.is_set():
                raise Cancelled
            # poll() returns at the first record; consume(n, timeout) would wait out its timeout
            # whenever fewer than n are left (0.5 s a partition, measured).
            first = consumer.poll(POLL_TIMEOUT)
            records = [first, *consumer.consume(BATCH_RECORDS - 1, 0)] if first is not None else []
            batch = rocksdict.WriteBatch(raw_mode=True)
            last = None
            for record in records:
                error = record.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        logger.warning("%s[%d]: %s", self.topic, partition, error)
                    continue
                offset = record.offset()
                key, value = record.key() or b"", record.value()
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
                    if key.startswith(state.SLOT_PREFIX):
                        due, timer_id = state.slot_timer(value)
                        batch.put(state.due_key(due, key[len(state.SLOT_PREFIX):]),
                                  timer_id.encode())
                last = offset
            if last is not None:
                batch.put(CHANGELOG_OFFSET_KEY, str(last).encode())
                batch.put(WRITTEN_MS_KEY, str(now_ms()).encode())
                db.write(batch, WRITE_OPTIONS)
                applied += len(records)
                position = last + 1
            now = time.monotonic()
            if now - last_report >= PROGRESS_INTERVAL:
                last_report = now
                rate = (position - start) / (now - began)
                left = high - position
                logger.info("%s[%d]: restored %d of %d records, %.0f/s, about %.0fs left",
                            self.topic, partition, position - start, total, rate,
                            left / rate if rate else float("inf"))
                self.progress(partition, left)
        logger.info("%s[%d]: restored %d records in %.1fs", self.topic, partition, total,
                    time.monotonic() - began)
        return applied

    def _consumer_for_restores(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(consumer_config(self.settings, None, **{
                "enable.partition.eof": True,
                # The next partition is fetched only once the broker answers the fetch it holds
                # for the last one: 500 ms by default, a partition (measured).
                "fetch.wait.max.ms": 10,
                "queued.max.messages.kbytes": 65_536,
                "fetch.max.bytes": 52_428_800,
            }))
        return self._consumer


def _clear(db: rocksdict.Rdict) -> None:
    """Delete every key of ``db`` (its files stay open)."""
    it = db.iter()
    it.seek_to_first()
    first = it.key() if it.valid() else None
    it.seek_to_last()
    last = it.key() if it.valid() else None
    del it
    if first is not None and last is not None:
        db.delete_range(first, last + b"\0")
