"""A worker: consume executions, merge the backlog, run tasks, report, commit.

Each turn of the loop, on one thread:
    take the records that are there -> skip those that ran already (:mod:`.dedupe`), dead-letter
    the unreadable (:mod:`.reporting`), merge the rest into the backlog by defer key
    -> hand the executions whose ``started`` event Kafka has to the task threads
    (:mod:`.dispatch`) -> report the outcomes that came back -> announce the next executions:
    produce their ``started`` events, without waiting (:mod:`.starting` says how many)
    -> commit (every so often) what is done
An execution's offset is committed only once what ends it is delivered (:mod:`.offsets`).

The consumer and producer are passed in; :mod:`cfstream.worker.run` makes the real ones, and
tests/worker drives the loop on stand-ins.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from cfstream.kafka import fetching
from cfstream.memory import tune_for_service
from cfstream.observability.metrics import WorkerMetrics
from cfstream.retries import Retries
from cfstream.scheduling.backlog import Backlog
from cfstream.settings import Settings
from cfstream.task import Task
from cfstream.wire import InvalidRecord, execution_from_dict, parse_json
from cfstream.worker import execute
from cfstream.worker.dedupe import Dedupe, Verdict
from cfstream.worker.dispatch import Dispatcher
from cfstream.worker.jobs import Job, Tracing
from cfstream.worker.offsets import OffsetTracker
from cfstream.worker.reporting import Reporter
from cfstream.worker.seen import SeenEvents
from cfstream.worker.starting import Starts

logger = logging.getLogger(__name__)

# Executions fetched ahead of the running ones; past it the worker pauses fetching. At 1,000
# the backlog ran empty between a resume and the next fetch several times a second at ~5k
# executions/s (seen in bench/worker).
MAX_BACKLOG = 10_000
# Records taken per turn after the first.
BATCH_MAX = 500
COMMIT_INTERVAL = 1.0
# Longest wait for a record when no task runs.
POLL_WAIT = 0.05
# ... and while tasks run or started events travel. Such a wait ends at the first outcome, or
# the first delivery, not at a new record (a poll cannot be woken from a task's thread, nor
# the outcomes queue by Kafka).
BUSY_POLL_WAIT = 0.002
# Seconds between updates of the consumer-lag gauge.
GAUGE_INTERVAL = 5.0
RUN = secrets.token_hex(3)  # this process's, in its name


def worker_name() -> str:
    """How this worker names itself in its events: ``<hostname>:<pid>:<run>``. ``run`` is drawn
    when the process starts: a container restarted in place comes back with the same hostname
    and pid, and the events of the process before it must not pass for its own."""
    return f"{socket.gethostname()}:{os.getpid()}:{RUN}"


class Worker:
    def __init__(self, settings: Settings, tasks: dict[str, Task[Any, Any]], consumer: Consumer,
                 producer: Producer, *, seen: SeenEvents | None = None,
                 metrics: WorkerMetrics | None = None, spans: Tracing | None = None) -> None:
        self.settings = settings
        self.tasks = tasks
        self.consumer = consumer
        self.producer = producer
        self.metrics = metrics or WorkerMetrics()
        self.name = worker_name()
        self.backlog: Backlog[Job] = Backlog()
        self.offsets = OffsetTracker()
        self.dedupe = Dedupe(seen or SeenEvents(settings, own=self.name))
        self.report = Reporter(settings, producer, self.offsets, self.metrics, self.name, spans)
        self.starts = Starts(settings.worker_concurrency)
        self.dispatcher = Dispatcher(tasks, settings.worker_concurrency, timed=self.starts.finished,
                                     spans=spans)
        self.running_loop = threading.Event()
        self.stopping = threading.Event()
        self.paused: set[int] = set()  # partitions paused while the backlog is full

    # -- lifecycle --------------------------------------------------------------------------

    def open(self) -> None:
        """Join the workers' group and start the task threads and the events reader."""
        self.dispatcher.open()
        self.consumer.subscribe([self.settings.executions_topic], on_assign=self.assigned,
                                on_revoke=self.revoked, on_lost=self.revoked)
        self.dedupe.start()
        logger.info("worker %s running tasks: %s", self.name, ", ".join(sorted(self.tasks)))
        tune_for_service()

    def run(self) -> None:
        """Run until :meth:`stop`, then finish what runs, commit and leave the group."""
        self.open()
        last_commit = last_gauges = time.monotonic()
        self.running_loop.set()
        try:
            while not self.stopping.is_set():
                self.turn(self._poll_wait())
                if time.monotonic() - last_commit >= COMMIT_INTERVAL:
                    self.commit()
                    last_commit = time.monotonic()
                if time.monotonic() - last_gauges >= GAUGE_INTERVAL:
                    self._update_lag()
                    last_gauges = time.monotonic()
        finally:
            self.running_loop.clear()
            self._shutdown()

    def turn(self, wait: float = 0.0) -> None:
        """Take the records that are there (waiting up to ``wait`` seconds for the first), start
        what fits, report what ended."""
        if wait and self.starts.announced:
            # Waiting for Kafka to take started events: a delivery ends the wait at once.
            self.producer.poll(wait)
            wait = 0.0
        elif wait and self.dispatcher.running:
            # Waiting for tasks to end: the first outcome ends the wait at once. Reported (and
            # so remembered as done) before a redelivery of one of them can be taken below.
            self._report(self.dispatcher.outcomes(wait))
            wait = 0.0
        # poll() returns as soon as a record is there; consume(n, t) would wait out t unless n
        # records came.
        first = self.consumer.poll(wait)
        if first is not None:
            self._take(first)
            for message in self.consumer.consume(BATCH_MAX, 0):
                self._take(message)
        self.producer.poll(0)  # deliveries: started events Kafka has, outcomes delivered
        self._report(self.dispatcher.outcomes())
        self._announce()
        self._flow_control()
        self.metrics.publish()

    def stop(self) -> None:
        self.stopping.set()

    def ready(self) -> bool:
        return self.running_loop.is_set() and not self.stopping.is_set()

    def commit(self) -> None:
        """Commit every partition's offsets up to its first execution not yet done."""
        offsets = self.offsets.committable()
        if not offsets:
            return
        topic = self.settings.executions_topic
        try:
            self.consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()],
                                 asynchronous=False)
        except Exception as exc:  # a rebalance in progress: sent again at the next commit
            logger.warning("commit failed: %s", exc)
            self.offsets.not_committed(offsets)

    def _poll_wait(self) -> float:
        """No wait while there is something to do: waiting out POLL_WAIT before each round of
        ``worker_concurrency`` tasks held a backlog to a few hundred tasks a second."""
        dispatcher = self.dispatcher
        if dispatcher.has_outcomes() or (self.backlog and self.starts.room(len(dispatcher.running))):
            return 0.0
        return BUSY_POLL_WAIT if dispatcher.running or self.starts else POLL_WAIT

    def _shutdown(self) -> None:
        """Finish what runs or was announced (within the shutdown timeout), report it, commit,
        leave the group."""
        busy = len(self.dispatcher.running) + len(self.starts)
        logger.info("worker %s stopping: finishing %d running or announced executions (at most "
                    "%.0f s), then committing", self.name, busy, self.settings.shutdown_timeout)
        self._finish_running(lambda job: True)
        if self.dispatcher.running or self.starts:
            logger.warning("%d executions still running or announced at the shutdown timeout: "
                           "the next owner of their partitions reports them lost (or retries "
                           "them, if their tasks retry)",
                           len(self.dispatcher.running) + len(self.starts))
        self.producer.flush(self.settings.shutdown_timeout)
        self.commit()
        self.consumer.close()  # revoked() reports what ended meanwhile
        self.metrics.publish()
        self.dedupe.close()
        self.dispatcher.close()
        logger.info("worker %s stopped", self.name)

    def _finish_running(self, which: Callable[[Job], bool]) -> None:
        """Run the announced jobs ``which`` selects (their ``started`` events may be on Kafka
        already: left alone, the next owner would take them for lost) and report the outcomes
        of those and of the running ones as they end, until none is left or the shutdown
        timeout passes."""
        deadline = time.monotonic() + self.settings.shutdown_timeout
        while time.monotonic() < deadline and any(
                which(job) for job in [*self.dispatcher.running.values(), *self.starts.jobs()]):
            self.producer.poll(0.01 if self.starts.announced else 0)
            self._report(self.dispatcher.outcomes(wait=0.0 if self.starts.announced else 0.05))

    def _update_lag(self) -> None:
        assigned = self.consumer.assignment()
        if not assigned:
            return
        for tp in self._standing(assigned):  # (librdkafka's position is unset after a seek)
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if tp.offset >= 0 and high >= 0:
                self.metrics.set_lag(tp.topic, tp.partition, high - tp.offset)

    # -- taking executions in -----------------------------------------------------------------

    def _take(self, message: Message) -> None:
        if message.error() is not None:
            logger.warning("consume error: %s", message.error())
            return
        partition, offset = message.partition(), message.offset()
        assert partition is not None and offset is not None  # noqa: S101 - set on fetched records
        self.offsets.take(partition, offset)
        self.dedupe.first_read(partition, message.timestamp()[1])
        try:
            data = parse_json(message.value(), self.settings.max_payload_bytes)
            job = Job(execution_from_dict(data), partition, offset)
        except InvalidRecord as exc:
            self.report.dead_letter(message, exc)
            return
        if (self.dedupe.done_here(job) or job.id in self.dispatcher.running
                or job.id in self.starts):
            self.offsets.finish(partition, offset)  # redelivered: it ran or runs here
            return
        if self._handled_elsewhere(job):  # redelivered: not merged, as if it were to run
            return
        merge = self.backlog.add(job)
        if merge is None:
            return
        if merge.winner is None:  # the same execution twice
            self.offsets.finish(merge.loser.partition, merge.loser.offset)
            return
        self.report.deferred(merge.loser, merge.winner)
        self.dedupe.remember(merge.loser)

    def _flow_control(self) -> None:
        """Pause the partitions the worker has read from while the backlog is full; resume them,
        sought where it stands, once it is half empty.

        A partition it has not read from since it was assigned stays unpaused: the worker
        knows no offset to seek it to, and a plain resume leaves its fetcher asleep up to ~1 s
        (:mod:`cfstream.kafka.fetching`) where no other partition's seek wakes it (its leader
        is another broker). It is paused at the turn that first takes records from it, so the
        backlog overshoots by at most BATCH_MAX records for each partition it had not read
        from."""
        if len(self.backlog) >= MAX_BACKLOG:
            fresh = self.offsets.partitions_read() - self.paused
            if fresh:
                topic = self.settings.executions_topic
                self.consumer.pause([TopicPartition(topic, p) for p in sorted(fresh)])
                self.paused |= fresh
        elif self.paused and len(self.backlog) < MAX_BACKLOG // 2:
            topic = self.settings.executions_topic
            fetching.resume(self.consumer, [
                TopicPartition(topic, p, self.offsets.next_offset(p)) for p in sorted(self.paused)])
            self.paused.clear()

    def _standing(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """``partitions`` at the offsets the worker stands at (unset where it took none)."""
        return [TopicPartition(tp.topic, tp.partition, self.offsets.next_offset(tp.partition))
                for tp in partitions]

    # -- running and reporting ------------------------------------------------------------------

    def _announce(self) -> None:
        """Produce the ``started`` events of the next jobs, as many as :class:`Starts` allows;
        each starts once Kafka has its event (:meth:`_delivered`)."""
        room = self.starts.room(len(self.dispatcher.running))
        while room > 0:
            job = self.backlog.pop()
            if job is None:
                return
            if not self._handled_elsewhere(job):  # again: events read while it queued
                self.starts.announce(job)
                self.report.started(job, self._delivered)
                room -= 1

    def _delivered(self, job: Job, ok: bool) -> None:
        """The ``started`` event of ``job`` is on Kafka: it goes to the task threads. Or Kafka
        refused it: then it is produced again, and the job waits for it."""
        if ok:
            self.starts.delivered(job)
            self.dispatcher.submit(job)
        else:
            self.report.started(job, self._delivered)

    def _handled_elsewhere(self, job: Job) -> bool:
        """Whether another worker already ran, merged or began this attempt (redelivered after
        a crash or a rebalance); one that began and never reported is lost: retried if the task
        retries, else reported as failed."""
        found, known = self.dedupe.elsewhere(job)
        if found is Verdict.RUN:
            return False
        if found is Verdict.LOST:
            began = (known or {}).get("worker")
            self.report.failed(job, execute.lost(began), self._policy(job))
        elif found is Verdict.RETRYING:  # the retry on the calls topic ends the run
            self.offsets.finish(job.partition, job.offset)
        else:  # ended: say so again, in case the worker that ran it died before it could
            self.report.ended_elsewhere(job)
        self.dedupe.remember(job)
        return True

    def _report(self, finished: list[tuple[Job, execute.Outcome]]) -> None:
        for job, outcome in finished:
            self.dedupe.remember(job)
            self.report.outcome(job, outcome, self._policy(job))

    def _policy(self, job: Job) -> Retries | None:
        task = self.tasks.get(job.call.task)
        return task.retries if task is not None else None

    # -- rebalances -----------------------------------------------------------------------------

    def assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.dedupe.assigned(tp.partition for tp in partitions)

    def revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Hand the partitions back cleanly: finish what runs from them, commit, drop the rest."""
        revoked = {tp.partition for tp in partitions}
        self._finish_running(lambda job: job.partition in revoked)
        self.producer.flush(self.settings.shutdown_timeout)
        self.commit()
        self.backlog.drop(lambda job: job.partition not in revoked)
        for partition in revoked:
            self.offsets.forget(partition)
        if revoked & self.paused:
            # librdkafka keeps an application's pause on a partition it takes away: assigned
            # here again, it would never fetch (seen with cooperative-sticky, librdkafka 2.16).
            topic = self.settings.executions_topic
            consumer.resume([TopicPartition(topic, p) for p in sorted(revoked & self.paused)])
            self.paused -= revoked
        self.dedupe.revoked(revoked)
