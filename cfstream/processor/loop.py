"""One processor replica: a loop on one confluent-kafka consumer, its producers
(:mod:`cfstream.processor.outputs`), and a task per owned calls partition
(:class:`~cfstream.processor.partition.PartitionTask`).

Each turn of the loop:
    consume the records that are there -> each partition's task applies the rules
    -> tasks fire what is due -> stage (changelog records + one WriteBatch per partition)
    -> write the WriteBatches of earlier turns whose records the broker now has
    -> commit the input offsets of what is written (every so often)
A turn does not wait for the broker: a batch's executions and events, then its changelog
records, go out while the next turns run (:mod:`cfstream.processor.outputs`), and reads see
the slots of the batches not yet written. A crash anywhere replays input from the last commit;
replays are idempotent (the rules know a call or a fired call by its id), and nothing is written
to RocksDB before Kafka has it.

Membership is incremental (``cooperative-sticky``): a rebalance never stops the partitions a
replica keeps. KIP-848 (``group.protocol=consumer``) works, but its broker-owned session timeout
(>= 45 s) fired a killed replica's partitions again after 49 s, not 7 s (bench/failover.py).

A partition assigned here is paused until :mod:`cfstream.processor.restore` has brought its DB
up to the changelog; a revoked one is committed and closed between two turns. Standby copies
(:mod:`cfstream.processor.group`, :mod:`cfstream.processor.standby`) mean a takeover replays
only what the copy has yet to read. Joining and leaving the group (static membership, the
warm-up before joining, the stop) is :mod:`cfstream.processor.membership`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from confluent_kafka import (
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from cfstream.clock import now_ms
from cfstream.kafka import fetching
from cfstream.kafka.groups import Groups
from cfstream.kafka.sessions import member_session_soon
from cfstream.kafka.topics import ensure_topics
from cfstream.memory import tune_for_service
from cfstream.observability.metrics import ProcessorMetrics
from cfstream.processor import membership, placement
from cfstream.processor.commits import Commits, start_offsets
from cfstream.processor.db import Databases, close
from cfstream.processor.group import GroupView, StandbyPlan
from cfstream.processor.outputs import Outputs
from cfstream.processor.partition import NEVER, PartitionTask, Windows
from cfstream.processor.restore import Counted, Restored, Restorer
from cfstream.processor.startup import Startup
from cfstream.processor.warmup import warm_up
from cfstream.processor.watermarks import Watermarks
from cfstream.settings import Settings

logger = logging.getLogger(__name__)

# Records taken per turn: large enough to amortise a turn's costs, small enough to fire on
# time. The first turns take fewer, doubling from BATCH_FIRST: a launch's first 5,000 took 0.1 s.
BATCH_MAX = 5_000
BATCH_FIRST = 500
# Longest wait for records when nothing is due sooner; bounds how late a stop is noticed.
MAX_WAIT = 0.1
# Wait while a due call waits for the broker to say where its partition ends (the answer cannot
# wake a poll: this bounds how long it lies unused).
PROOF_WAIT = 0.001
# ... and while the replica joins (a poll that calls the assignment callback then waits on) or a
# partition restores (its end cannot wake the poll either).
RESTORE_WAIT = 0.005
COMMIT_INTERVAL = 0.5
# Batches on their way to the broker before a turn waits for the oldest. Under mixed load (a
# turn every ~2 ms) 25-30 are, in ~50 ms; at full speed one or two, of 5,000 records each.
MOST_UNWRITTEN = 64
# Longest wait for records while batches are on their way, so that they are written and their
# input committed soon after the broker has them.
UNWRITTEN_WAIT = 0.005
GAUGE_INTERVAL = 5.0
# Where a partition's DB came from when it came here, for the log.
SOURCES = {"standby": "from a standby", "disk": "from its disk", "cold": "cold"}


class Processor:
    def __init__(self, settings: Settings, metrics: ProcessorMetrics | None = None,
                 windows: Windows | None = None, groups: Groups | None = None) -> None:
        self.settings, self.windows = settings, windows  # windows: spans, if tracing is on
        self.groups = groups  # the group reader, if started already (processor.run)
        self.metrics = metrics or ProcessorMetrics()
        self.topic = settings.calls_topic
        self.tasks: dict[int, PartitionTask] = {}
        self.restoring: dict[int, list[Message]] = {}  # partition -> records read meanwhile
        self.starts: dict[int, int] = {}  # restoring partition -> where its input starts
        self.joined = False
        # The group's id for this member, as of its last assignment. Asking the consumer each
        # turn is a round trip to librdkafka's main thread: 7 % of the loop's wall time under mixed
        # load (py-spy), longer when that thread waits for a core.
        self.member = ""
        self.plan: StandbyPlan | None = None  # copies and the group's view, from run()
        # False once a turn failed: its input was not persisted, so no offset may be committed.
        self.healthy = True
        # The tasks that staged each batch on its way to the broker, oldest first.
        self.unwritten: deque[list[PartitionTask]] = deque()
        self.dead = False  # a fatal error (a fence): the consumer can do nothing more
        self.stopping = threading.Event()
        self.consumer: Consumer | None = None
        self.commits = Commits(self.topic)
        self.fences = membership.Fences()
        self.lost = membership.Lost()
        self._last_commit = self._last_gauges = time.monotonic()
        self._batch = BATCH_FIRST  # records the next turn may take
        self.startup = Startup()

    def ready(self) -> bool:
        """In a settled group, and every partition assigned here restored (read from any
        thread)."""
        return (self.joined and not self.restoring and not self.stopping.is_set()
                and self.plan is not None and self.plan.settled)

    def stop(self) -> None:
        """Finish the current turn, commit, leave the group (safe from a signal handler)."""
        self.stopping.set()

    # -- lifecycle ---------------------------------------------------------------------------

    def run(self) -> None:
        settings = self.settings
        group, copies = None, set()
        self.session_ms = member_session_soon(settings, membership.SESSION_TIMEOUT_MS)
        if placement.predicts_assignment(settings):  # (the group asked for before the rest)
            group = GroupView(settings, self.groups or Groups.asking(settings, settings.processor_group))
        ensure_topics(settings)
        self.startup.mark("topics")
        self.databases = Databases(settings.state_dir, self.topic)
        self.outputs = Outputs(settings, settings.changelog_topic)
        self.restorer = Restorer(settings, self.databases, self.metrics.set_restore_remaining)
        self.watermarks = Watermarks(settings)
        if group is not None:
            if settings.warmup_timeout > 0:  # copies kept until the group says otherwise
                copies = warm_up(settings, group, self.restorer.standbys, self.stopping)
                self.startup.mark("warm-up")
        self.plan = StandbyPlan(settings, group, self.restorer.standbys, self.metrics, copies)
        membership.announce(settings, self._join())
        logger.info("processor replica started (group %s, state in %s)",
                    settings.processor_group, self.databases.root)
        tune_for_service()
        try:
            while not self.stopping.is_set():
                try:
                    self.turn()
                except KafkaException as exc:  # a fence, on a record or from any call
                    if membership.fence_of(exc) is None:
                        raise
                    self._fenced(exc)
                if self.lost.overdue():
                    self._rejoin(f"no assignment {membership.REJOIN_AFTER_LOST:.0f}s after its "
                                 "partitions were lost (librdkafka#3437)")
            self._persist(keep=0)
            self._commit()
        except BaseException:
            self.healthy = False
            raise
        finally:
            self._close()

    def _join(self) -> dict[str, Any]:
        """A new consumer, subscribed: the replica joins its group (the consumer's config)."""
        config = membership.group_config(self.settings, self.session_ms.result())
        self.consumer = Consumer({**config, "on_commit": self.commits.on_commit})
        self.consumer.subscribe([self.topic], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_lost)
        return config

    def _fenced(self, cause: KafkaException) -> None:
        """The group gave this replica's id to another member: join again in place, unless it
        did so lately (then it stops)."""
        self.healthy, self.dead = False, True
        self.fences.rejoin_or_stop(cause, self.settings.instance_id)
        self._rejoin(f"fenced ({cause}; most likely librdkafka#3437: a session that timed out "
                     "on a loaded machine rejoins and fences itself)")

    def _rejoin(self, why: str) -> None:
        """Drop every partition uncommitted, as a crash would, and join again with a new
        consumer (:mod:`~cfstream.processor.membership`). The partitions come back restored from
        this replica's disk."""
        logger.warning("%s: dropping its partitions uncommitted and joining again as %s", why,
                       self.settings.instance_id or "a new member")
        if self.consumer is not None:  # (its close may call _on_lost: so first)
            membership.close(self.consumer, self.settings, usable=False)
        self.outputs.forget(self._owned())  # (another member may own them now)
        for partition in list(self._owned()):
            self._drop(partition)
        self.lost.assigned()
        self.healthy, self.dead, self.joined = True, False, False
        if self.plan is not None:
            self.plan.rebalanced(set())
        self._join()

    def _close(self) -> None:
        consumer = self.consumer
        if consumer is not None:
            membership.close(consumer, self.settings, usable=not self.dead)
        for partition in list(self.tasks):
            self._drop(partition)
        self.restorer.close()
        if self.plan is not None and self.plan.group is not None:
            self.plan.group.close()
        self.watermarks.close()
        self.outputs.close()
        logger.info("processor replica stopped")

    # -- the loop ----------------------------------------------------------------------------

    def turn(self) -> None:
        """Read what is there, apply it, fire what is due, persist."""
        consumer = self.consumer
        assert consumer is not None  # noqa: S101 - run() made it
        wait = self._wait()
        first = consumer.poll(min(wait, UNWRITTEN_WAIT) if self.unwritten else wait)
        messages = [first] if first is not None else []
        if first is not None:
            messages.extend(consumer.consume(self._batch - 1, 0))
            self._batch = min(BATCH_MAX, self._batch * 2)
        now = now_ms()
        batches: dict[int, list[Message]] = {}
        for message in messages:
            if self._readable(message):
                batches.setdefault(message.partition(), []).append(message)  # type: ignore[arg-type]
        if batches.keys() & self.tasks.keys() and not self.startup.done:
            self.metrics.set_startup(self.startup.first_records() or {})
        for partition, batch in batches.items():
            self._apply(partition, batch, now)
        self._take_restored()
        if self.joined and self.plan is not None:
            self.plan.turn(self.member, self._owned())
        self.watermarks.prove(self.tasks, now)
        now = now_ms()
        tasks = list(self.tasks.values())
        if any(task.unwritten_due <= min(now, task.horizon_ms) for task in tasks):
            self._persist(keep=0)  # a timer to fire is in the index only once written
        for task in tasks:
            task.fire_read(now)
            task.fire_due(now)
            task.stage()
        self.unwritten.append(tasks)
        self.outputs.end_batch()
        self._persist(keep=MOST_UNWRITTEN)
        if time.monotonic() - self._last_commit >= COMMIT_INTERVAL:
            self._commit()
        if time.monotonic() - self._last_gauges >= GAUGE_INTERVAL:
            self._update_gauges()

    def _persist(self, keep: int) -> None:
        """Write the WriteBatches of the batches the broker has, oldest first, waiting until at
        most ``keep`` batches are left unwritten."""
        for offsets in self.outputs.delivered(keep):
            for task in self.unwritten.popleft():
                if self.tasks.get(task.partition) is task:  # (not let go since)
                    task.write(None if offsets is None else offsets.get(task.partition))

    def _readable(self, message: Message) -> bool:
        """Whether ``message`` is a record (an error is logged, or raised if fatal)."""
        error = message.error()
        if error is None:
            return True
        if error.fatal() or error.code() == KafkaError._FATAL:
            self._fatal(error)
        if error.code() != KafkaError._PARTITION_EOF:
            logger.warning("%s: %s", self.topic, error)
        return False

    def _apply(self, partition: int, batch: list[Message], now: int) -> None:
        """Hand one partition's records, in offset order, to its task."""
        task = self.tasks.get(partition)
        if task is None:
            early = self.restoring.get(partition)
            if early is not None:  # fetched before the pause took hold: keep them for later
                early.extend(batch)
            return
        task.prefetch([message.key() or b"" for message in batch])
        for message in batch:
            kind, timestamp = message.timestamp()
            task.process(message.key(), message.value(), message.offset(),  # type: ignore[arg-type]
                         timestamp if kind == TIMESTAMP_LOG_APPEND_TIME else None, now)

    def _fatal(self, error: KafkaError) -> None:
        """Stop now and commit nothing: the consumer is unusable, and after a fence another
        replica owns the partitions (:meth:`run` decides whether it joins again)."""
        self.healthy, self.dead = False, True
        raise KafkaException(error)

    def _wait(self) -> float:
        """How long the next poll may wait for records."""
        if not self.restorer.results.empty():
            return 0
        now = now_ms()
        # Answers that came in during the last turn count now: a call they prove due fires
        # without a wait (at 10k timers/s every turn waited PROOF_WAIT for an answer it had).
        self.watermarks.prove(self.tasks, now)
        due = min((task.next_due for task in self.tasks.values()), default=NEVER)
        if due > now:
            busy = self.restoring.keys() - self.restorer.retries.keys() or not self.joined
            return min(RESTORE_WAIT if busy else MAX_WAIT, (due - now) / 1000)
        if any(task.next_due <= min(now, task.horizon_ms) for task in self.tasks.values()):
            return 0  # more to fire (a turn takes MAX_ENTRIES_PER_BATCH entries a partition)
        return PROOF_WAIT

    def _commit(self) -> None:
        self._last_commit = time.monotonic()
        if self.healthy and self.consumer is not None:
            self.commits.commit(self.consumer,
                                {p: task.persisted for p, task in self.tasks.items()})

    def _owned(self) -> set[int]:
        return set(self.tasks) | set(self.restoring)

    def _update_gauges(self) -> None:
        self._last_gauges = time.monotonic()
        consumer = self.consumer
        self.metrics.set_standby_lags(self.restorer.standbys.lags)
        for partition, task in self.tasks.items():
            pending = task.pending_calls()
            if pending is not None:
                self.metrics.set_pending(partition, pending)
            if consumer is not None:
                _, high = consumer.get_watermark_offsets(TopicPartition(self.topic, partition),
                                                         cached=True)
                if high >= 0:
                    self.metrics.set_lag(self.topic, partition, high - task.position)

    # -- partitions coming and going ---------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        mine = [tp for tp in partitions if tp.topic == self.topic]
        self.lost.assigned()
        self.starts.update(start_offsets(consumer, self.topic, [tp.partition for tp in mine]))
        # Not at those offsets: _start has them fetched from their positions (fetching.resume).
        consumer.incremental_assign(partitions)
        if mine:
            consumer.pause(mine)  # until restored
        for tp in mine:
            self.restoring[tp.partition] = []
            self.restorer.restore(tp.partition)  # takes the partition's copy if there is one
        self.member = consumer.memberid() or ""  # (a new member gets its id as it joins)
        if self.plan is not None:
            self.plan.rebalanced(self._owned())
        self.joined = True
        self.startup.mark("group join")
        if mine:
            logger.info("assigned %s[%s]: restoring", self.topic,
                        ",".join(str(tp.partition) for tp in mine))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._let_go(partitions, commit=True)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.warning("lost %s[%s] (session expired): another replica owns them now",
                       self.topic, ",".join(str(tp.partition) for tp in partitions))
        self.lost.lost()
        self.joined = False  # not ready until it is assigned again
        self._let_go(partitions, commit=False)

    def _let_go(self, partitions: list[TopicPartition], commit: bool) -> None:
        mine = [tp.partition for tp in partitions if tp.topic == self.topic]
        if commit and self.healthy:  # still this replica's: every batch written first
            self._persist(keep=0)
            offsets = [TopicPartition(self.topic, p, self.tasks[p].persisted)
                       for p in mine if p in self.tasks]
            if offsets and self.consumer is not None:
                try:
                    self.consumer.commit(offsets=offsets, asynchronous=False)
                except Exception as exc:  # the new owner replays a little more
                    logger.warning("could not commit revoked partitions: %s", exc)
        else:  # lost, or this replica is failing: nothing more of theirs goes out
            self.outputs.forget(set(mine))
        for partition in mine:
            self._drop(partition)
        if mine:
            logger.info("revoked %s[%s]", self.topic, ",".join(map(str, mine)))
        if self.plan is not None:
            self.plan.rebalanced(self._owned())

    def _drop(self, partition: int) -> None:
        self.restorer.cancel(partition)
        self.watermarks.forget(partition)
        self.restoring.pop(partition, None)
        self.starts.pop(partition, None)
        self.commits.forget(partition)
        self.metrics.forget_partition(partition)
        task = self.tasks.pop(partition, None)
        if task is not None:
            task.close()

    def _take_restored(self) -> None:
        self.restorer.retry_due()
        while not self.restorer.results.empty():
            result = self.restorer.results.get_nowait()
            if isinstance(result, Counted):
                task = self.tasks.get(result.partition)
                if task is not None:
                    task.pending = result.pending
                continue
            self._start(result)

    def _start(self, restored: Restored) -> None:
        partition, db = restored.partition, restored.db
        early = self.restoring.get(partition)
        if early is None:  # revoked meanwhile
            if db is not None:
                close(db)
            return
        if db is None:  # the restore failed (logged)
            self.restorer.retry_later(partition)
            return
        self.restorer.ran(partition)
        assert self.consumer is not None  # noqa: S101 - assigned through it
        task = PartitionTask(self.settings, partition, db, self.outputs, self.metrics,
                             position=self.starts.pop(partition), windows=self.windows)
        del self.restoring[partition]
        self.tasks[partition] = task
        self.restorer.count(partition, db.snapshot())
        if early:
            self._apply(partition, early, now_ms())
        fetching.resume(self.consumer, [TopicPartition(self.topic, partition, task.position)])
        self.metrics.took_over(restored.source, restored.records)
        if not self.restoring:
            self.startup.mark("restore")
        logger.info("%s[%d]: running from offset %d (%d changelog records restored, %s)",
                    self.topic, partition, task.position, restored.records,
                    SOURCES[restored.source])
