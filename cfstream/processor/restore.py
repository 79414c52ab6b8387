"""Bringing a newly assigned partition's DB up to its changelog, in a thread of its own.

The loop keeps processing the partitions it already runs while this thread opens a new one's
DB (or takes its standby copy), reads the changelog from the offset the DB holds to the end, and
writes it in WriteBatches (:mod:`cfstream.processor.changelog`). Then it hands the DB to the
loop, and counts its pending calls on a snapshot for the gauge. While no job waits, the same
thread keeps the standby copies (:mod:`cfstream.processor.standby`): restores come first, and
every DB that is not owned has this one thread as its writer.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import rocksdict
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from cfstream.kafka.config import consumer_config
from cfstream.kafka.retry import watermarks
from cfstream.processor import changelog, state
from cfstream.processor.db import Databases, changelog_offset, close
from cfstream.processor.standby import Standbys
from cfstream.settings import Settings

logger = logging.getLogger(__name__)

BATCH_RECORDS = 10_000
POLL_TIMEOUT = 0.5
PROGRESS_INTERVAL = 5.0
COUNT_CHUNK = 50_000
# The count walks every slot in Python; it lets go of the GIL this often, or the loop's thread,
# which takes the GIL back after each poll, flush and write, waits out 5 ms switch intervals
# behind it (a survivor's fire lateness p99 reached 263 ms while it counted 1.67M slots).
COUNT_YIELD = 1_000
# With standby copies to keep, how long the thread waits for their records before it looks for
# a job again; with none, how long it waits for a job before it looks at what to copy.
TAIL_POLL = 0.05
IDLE_WAIT = 0.5
# A failed restore (logged) is tried again after this, doubling up to RESTORE_BACKOFF_MAX.
RESTORE_BACKOFF = 0.5
RESTORE_BACKOFF_MAX = 10.0
# How long the restores' consumer may take to connect at start (see Restorer._connect).
CONNECT_TIMEOUT = 5.0


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
    source: str = "cold"  # where the DB came from: "standby", "disk" or "cold" (from nothing)


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
        self.active: dict[int, PartitionJob] = {}  # owned partitions' latest jobs
        self.retries: dict[int, tuple[int, float]] = {}  # partition -> (failures, when again)
        self.standbys = Standbys(settings, databases)
        self._lock = threading.Lock()  # a job starts, or is cancelled before it starts
        self._consumer: Consumer | None = None
        self._copies_paused = False  # or their resume failed
        self._thread = threading.Thread(target=self._run, name="cfstream-restore", daemon=True)
        self._thread.start()

    def restore(self, partition: int) -> None:
        self._submit(PartitionJob(partition, "restore"))

    def retry_later(self, partition: int) -> None:
        """The restore of ``partition`` failed: start it again later, later each time (a
        changelog leader gone, say, is not asked as fast as it fails)."""
        failures = self.retries.get(partition, (0, 0.0))[0] + 1
        backoff = min(RESTORE_BACKOFF * 2 ** (failures - 1), RESTORE_BACKOFF_MAX)
        self.retries[partition] = (failures, time.monotonic() + backoff)
        logger.warning("%s[%d]: restore failed %d time(s); trying again in %.1fs", self.topic,
                       partition, failures, backoff)

    def ran(self, partition: int) -> None:
        """The partition's restore succeeded: forget its failures."""
        self.retries.pop(partition, None)

    def retry_due(self) -> None:
        """Start again the failed restores whose wait is over."""
        now = time.monotonic()
        for partition, (failures, at) in list(self.retries.items()):
            if at <= now:
                self.retries[partition] = (failures, float("inf"))
                self.restore(partition)

    def count(self, partition: int, snapshot: Any) -> None:
        self._submit(PartitionJob(partition, "count", snapshot=snapshot))

    def cancel(self, partition: int) -> None:
        """The partition is gone: forget its failures, and stop its job."""
        self.retries.pop(partition, None)
        self._stop(partition)

    def _stop(self, partition: int) -> None:
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
        self._stop(job.partition)
        self.active[job.partition] = job
        self.jobs.put(job)

    def _run(self) -> None:
        standbys = self.standbys
        try:
            self._connect()
            while True:
                try:
                    job = (self.jobs.get_nowait() if standbys.copies
                           else self.jobs.get(timeout=IDLE_WAIT))
                except queue.Empty:
                    if self._copies_paused:  # their resume failed: again
                        self._pause_copies(False)
                    standbys.reconcile(set(self.active))
                    standbys.tail(TAIL_POLL)
                    continue
                if job is None:
                    break
                self._pause_copies(True)
                self._run_job(job)
                if self.jobs.empty():
                    self._pause_copies(False)
        finally:
            standbys.close()
            if self._consumer is not None:
                self._consumer.close()

    def _pause_copies(self, paused: bool) -> None:
        """Stop the standby copies' fetching while jobs run, or start it again. A failure is
        logged, and a failed resume tried again when the thread is next idle: the copies only
        keep takeovers short, and the jobs must go on."""
        try:
            self.standbys.pause(paused)
        except Exception:
            logger.exception("%s: the standby copies could not be %s", self.topic,
                             "paused" if paused else "resumed")
            self._copies_paused = True  # (paused or not: a resume that works is harmless)
        else:
            self._copies_paused = paused

    def _run_job(self, job: PartitionJob) -> None:
        with self._lock:
            if job.cancelled.is_set():
                return
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
            if seen % COUNT_YIELD == 0:
                time.sleep(0.0005)
                if seen % COUNT_CHUNK == 0 and job.cancelled.is_set():
                    raise Cancelled
            it.next()
        del it
        self.results.put(Counted(job.partition, pending))

    def _restore(self, job: PartitionJob) -> None:
        partition = job.partition
        db = self.standbys.take(partition)
        source = "standby"
        if db is None:
            db = self.databases.open(partition)
            source = "disk" if changelog_offset(db) is not None else "cold"
        try:
            records = self._catch_up(db, job)
        except BaseException:
            close(db)
            raise
        self.results.put(Restored(partition, db, records, source))

    def _catch_up(self, db: rocksdict.Rdict, job: PartitionJob) -> int:
        partition = job.partition
        consumer = self._consumer_for_restores()
        low, high = watermarks(consumer, self.topic, partition, timeout=10)
        start = changelog.start_offset(db, f"{self.topic}[{partition}]", low, high)
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
            last = changelog.apply(db, _changelog_records(records, self.topic, partition))
            if last is not None:  # counted without the end-of-partition events
                applied += sum(record.error() is None for record in records)
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

    def _connect(self) -> None:
        """Connect the restores' consumer to the changelog's leaders now, while the replica
        still checks its topics and warms up: its first restore would otherwise wait for that
        (~50 ms on loopback), and a replica's start-up with it. A failure is left to that
        restore, which retries."""
        consumer = self._consumer_for_restores()
        try:
            consumer.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=CONNECT_TIMEOUT)
        except KafkaException as exc:
            logger.debug("%s: the restores' consumer did not connect yet: %s", self.topic, exc)

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



def _changelog_records(records: list[Any], topic: str,
                       partition: int) -> Iterator[tuple[bytes, bytes | None, int]]:
    for record in records:
        error = record.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                logger.warning("%s[%d]: %s", topic, partition, error)
            continue
        yield record.key() or b"", record.value(), record.offset()
