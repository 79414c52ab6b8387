"""A worker process: consume executions, merge the backlog, run tasks, report, commit.

All Kafka work happens on the main thread. Sync tasks run in a thread pool, async ones on an
event loop in a thread of its own; both hand their outcome back through a queue. An execution's
offset is committed only once its outcome event (or its ``deferred`` event) is delivered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import importlib
import logging
import os
import queue
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from cfstream.clock import now_ms
from cfstream.codec import dumps
from cfstream.events.reader import EventReader
from cfstream.kafka.config import consumer_config, producer_config
from cfstream.kafka.topics import ensure_topics
from cfstream.observability.metrics import WorkerMetrics
from cfstream.scheduling.backlog import Backlog
from cfstream.settings import Settings
from cfstream.task import Task, registry
from cfstream.wire import (
    Control,
    FiredCall,
    InvalidRecord,
    dead_letter,
    event,
    event_order,
    execution_from_dict,
    parse_json,
)
from cfstream.worker import execute
from cfstream.worker.offsets import OffsetTracker

logger = logging.getLogger(__name__)

# Executions fetched ahead of the running ones; past it the worker pauses fetching.
MAX_BACKLOG = 1_000
# Ids remembered as done, so a redelivered execution is not run again by this worker.
REMEMBERED_IDS = 100_000
COMMIT_INTERVAL = 1.0
# Longest wait for a record when no task runs.
POLL_WAIT = 0.05
# ... and while tasks run: a finished task is reported, and its slot refilled, only between
# waits (a poll cannot be woken from the task's thread).
BUSY_POLL_WAIT = 0.002
# Executions remembered from the events topic (id, type, worker: about 200 bytes each).
SEEN_IDS = 500_000
# Longest wait for the events topic to be read up to date after an assignment.
SYNC_TIMEOUT = 60.0
# Seconds between updates of the consumer-lag gauge.
GAUGE_INTERVAL = 5.0


@dataclass(frozen=True, slots=True)
class Job:
    execution: FiredCall
    partition: int
    offset: int

    @property
    def id(self) -> str:
        return self.execution.call.id

    @property
    def key(self) -> str:
        call = self.execution.call  # a collected run holds others' arguments: never merged
        return call.id if call.collected is not None else call.key

    @property
    def submitted_ms(self) -> int:
        return self.execution.call.submitted_ms

    @property
    def attempt(self) -> int:
        return self.execution.call.attempt


def import_tasks(modules: list[str]) -> dict[str, Task[Any, Any]]:
    """Import ``modules``; the tasks they register are the only ones this worker runs."""
    for name in modules:
        importlib.import_module(name)
    return registry()


class Worker:
    def __init__(self, settings: Settings, tasks: dict[str, Task[Any, Any]],
                 metrics: WorkerMetrics | None = None) -> None:
        self.settings = settings
        self.tasks = tasks
        self.metrics = metrics or WorkerMetrics()
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.running_loop = threading.Event()
        self.backlog: Backlog[Job] = Backlog()
        self.offsets = OffsetTracker()
        self.running: dict[str, Job] = {}
        # Id -> the latest attempt of it done here (a retry is the same id, a later attempt).
        self.done_ids: OrderedDict[str, int] = OrderedDict()
        self.outcomes: queue.Queue[tuple[Job, execute.Outcome]] = queue.Queue()
        self.pool = concurrent.futures.ThreadPoolExecutor(settings.worker_concurrency,
                                                          thread_name_prefix="cfstream-task")
        self.loop = asyncio.new_event_loop()
        self.stopping = threading.Event()
        self.paused = False
        # Which executions other workers already began or finished, from the events topic.
        self.seen = EventReader(settings, max_remembered=SEEN_IDS, fields=("worker",))
        # Assigned partitions not yet checked against events -> when assigned (monotonic).
        self.fresh: dict[int, float] = {}
        self.synced_at = float("-inf")  # when the last sync() that succeeded began
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def run(self) -> None:
        ensure_topics(self.settings)
        loop_thread = threading.Thread(target=self.loop.run_forever, name="cfstream-async",
                                       daemon=True)
        loop_thread.start()
        self.producer = Producer(producer_config(self.settings))
        self.consumer = Consumer(consumer_config(
            self.settings, f"{self.settings.topic_prefix}.workers",
            **{"partition.assignment.strategy": "cooperative-sticky",
               # A killed worker's partitions move after this long (librdkafka's default: 45 s).
               "session.timeout.ms": 10_000, "heartbeat.interval.ms": 1_000}))
        self.consumer.subscribe([self.settings.executions_topic], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_revoke)
        # Start reading events now, not on the first execution: that one would wait for it.
        self.seen.read_since(now_ms())
        logger.info("worker %s running tasks: %s", self.name, ", ".join(sorted(self.tasks)))
        last_commit = last_gauges = time.monotonic()
        self.running_loop.set()
        try:
            while not self.stopping.is_set():
                # poll() returns as soon as a record is there; consume(n, t) would wait out t
                # unless n records came.
                first = self.consumer.poll(self._poll_wait())
                if first is not None:
                    self._take(first)
                    for message in self.consumer.consume(500, 0):
                        self._take(message)
                self._start_ready()
                self._report_outcomes()
                self.producer.poll(0)
                self._flow_control()
                if time.monotonic() - last_commit >= COMMIT_INTERVAL:
                    self._commit()
                    last_commit = time.monotonic()
                if time.monotonic() - last_gauges >= GAUGE_INTERVAL:
                    self._update_lag()
                    last_gauges = time.monotonic()
        finally:
            self.running_loop.clear()
            self._shutdown()
            self.loop.call_soon_threadsafe(self.loop.stop)

    def _poll_wait(self) -> float:
        """No wait while there is something to do: waiting out POLL_WAIT before each round of
        ``worker_concurrency`` tasks held a backlog to a few hundred tasks a second."""
        if self.outcomes.qsize() or (self.backlog and len(self.running) <
                                     self.settings.worker_concurrency):
            return 0.0
        return BUSY_POLL_WAIT if self.running else POLL_WAIT

    def stop(self) -> None:
        self.stopping.set()

    def ready(self) -> bool:
        return self.running_loop.is_set() and not self.stopping.is_set()

    def _update_lag(self) -> None:
        assert self.consumer is not None  # noqa: S101
        assigned = self.consumer.assignment()
        if not assigned:
            return
        for tp in self.consumer.position(assigned):
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if tp.offset >= 0 and high >= 0:
                self.metrics.set_lag(tp.topic, tp.partition, high - tp.offset)

    def _shutdown(self) -> None:
        """Finish what runs (within the shutdown timeout), report it, commit, leave the group."""
        deadline = time.monotonic() + self.settings.shutdown_timeout
        while self.running and time.monotonic() < deadline:
            self._report_outcomes(block=0.1)
        if self.running:
            logger.warning("%d tasks still running at shutdown; they will run again elsewhere",
                           len(self.running))
        assert self.producer is not None and self.consumer is not None  # noqa: S101
        self.producer.flush(self.settings.shutdown_timeout)
        self._commit()
        self.consumer.close()
        self.seen.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # -- taking executions in -----------------------------------------------------------------

    def _take(self, message: Message) -> None:
        if message.error() is not None:
            logger.warning("consume error: %s", message.error())
            return
        partition, offset = message.partition(), message.offset()
        assert partition is not None and offset is not None  # noqa: S101 - set on fetched records
        self.offsets.take(partition, offset)
        self._sync_events(message)
        try:
            data = parse_json(message.value(), self.settings.max_payload_bytes)
            job = Job(execution_from_dict(data), partition, offset)
        except InvalidRecord as exc:
            self._dead_letter(message, exc)
            return
        if self.done_ids.get(job.id, 0) >= job.attempt or job.id in self.running:
            self.offsets.finish(partition, offset)  # redelivered: it ran or runs here
            return
        merge = self.backlog.add(job)
        if merge is None:
            return
        if merge.winner is None:
            self.offsets.finish(merge.loser.partition, merge.loser.offset)
            return
        loser, winner = merge.loser, merge.winner
        self.metrics.deferrals.labels(task=loser.execution.call.task, where="backlog").inc()
        self._emit(event("deferred", loser.execution.call, now_ms(), successor=winner.id,
                         reason="backlog"), done=loser)
        self._remember(loser)

    def _flow_control(self) -> None:
        assert self.consumer is not None  # noqa: S101
        if not self.paused and len(self.backlog) >= MAX_BACKLOG:
            self.consumer.pause(self.consumer.assignment())
            self.paused = True
        elif self.paused and len(self.backlog) < MAX_BACKLOG // 2:
            self.consumer.resume(self.consumer.assignment())
            self.paused = False

    # -- running --------------------------------------------------------------------------------

    def _start_ready(self) -> None:
        starting = []
        while len(self.running) < self.settings.worker_concurrency:
            job = self.backlog.pop()
            if job is None:
                break
            if self._handled_elsewhere(job):
                continue
            call = job.execution.call
            self.running[job.id] = job
            self.metrics.executions_started.labels(task=call.task).inc()
            self._emit(event("started", call, now_ms(), worker=self.name,
                             due_ms=job.execution.due_ms, fired_ms=job.execution.fired_ms))
            starting.append(job)
        if not starting:
            return
        # `started` must be on Kafka before the task runs: if this process dies mid-run, the
        # next owner sees it and does not run the task a second time.
        self._flush_until_delivered()
        for job in starting:
            call = job.execution.call
            target, ready = execute.prepare(self.tasks.get(call.task), call)
            if ready is not None:
                self.outcomes.put((job, ready))
            elif asyncio.iscoroutine(target):
                future = asyncio.run_coroutine_threadsafe(target, self.loop)
                future.add_done_callback(self._collect(job))
            else:
                self.pool.submit(target).add_done_callback(self._collect(job))

    def _handled_elsewhere(self, job: Job) -> bool:
        """Whether another worker already ran, merged or began this attempt of the execution
        (redelivered after a crash or a rebalance); if it began and never reported, retry it
        if the task retries, else report it as lost."""
        known = self.seen.known(job.id)
        if known is None:
            return False
        attempt, _ = event_order(known)
        if attempt < job.attempt or (attempt == job.attempt and known["type"] == "scheduled"):
            return False  # the events so far are about earlier attempts, or none began this one
        if attempt == job.attempt and known["type"] == "started":
            lost = execute.failure(
                "WorkerLost",
                f"worker {known.get('worker')} stopped while running this execution, before "
                "reporting its outcome; it is not run again so that it never runs twice "
                "(give the task retries to run it again)",
            )
            self._fail(job, lost)
        elif known["type"] == "retrying":  # the retry on the calls topic ends the run
            self.offsets.finish(job.partition, job.offset)
        else:  # ended: say so again, in case the worker that ran it died before it could
            self._finish(job)
        self._remember(job)
        return True

    def _flush_until_delivered(self) -> None:
        assert self.producer is not None  # noqa: S101
        while self.producer.flush(1.0) and not self.stopping.is_set():
            logger.warning("waiting for Kafka to take the started events")

    def _sync_events(self, message: Message) -> None:
        """On the first record of a newly assigned partition: read every event since that
        record was fired, so redelivered executions are recognised.

        The events that matter are the earlier owners', published before the assignment (a
        worker flushes them before it hands a partition back), so a sync begun after the
        assignment covers them if it read from early enough: partitions assigned together
        share one sync instead of stalling the loop once each."""
        partition = message.partition()
        assigned = self.fresh.pop(partition, None) if partition is not None else None
        if assigned is None:
            return
        _, fired = message.timestamp()
        rewound = self.seen.read_since(fired if fired > 0 else now_ms())
        if not rewound and self.synced_at >= assigned:
            return
        began = time.monotonic()
        if self.seen.sync(SYNC_TIMEOUT):
            self.synced_at = began
        else:
            logger.warning("events not read up to date within %ss; a redelivered execution "
                           "might run again", SYNC_TIMEOUT)

    def _collect(self, job: Job) -> Callable[[concurrent.futures.Future[Any]], None]:
        def done(future: concurrent.futures.Future[Any]) -> None:
            if future.cancelled():
                return
            error = future.exception()
            if error is not None:
                outcome = execute.from_exception(error)
            else:
                outcome = execute.success(future.result(), job.execution.call.task)
            self.outcomes.put((job, outcome))
        return done

    def _report_outcomes(self, block: float = 0.0) -> None:
        try:
            job, outcome = self.outcomes.get(timeout=block) if block else \
                self.outcomes.get_nowait()
        except queue.Empty:
            return
        while True:
            self.running.pop(job.id, None)
            self._remember(job)
            if outcome.type == "succeeded":
                self.metrics.executions_succeeded.labels(task=job.execution.call.task).inc()
                self._emit(event(outcome.type, job.execution.call, now_ms(), worker=self.name,
                                 **outcome.fields), done=job)
            else:
                self._fail(job, outcome)
            try:
                job, outcome = self.outcomes.get_nowait()
            except queue.Empty:
                return

    def _fail(self, job: Job, outcome: execute.Outcome) -> None:
        """Report a failed attempt: as ``retrying`` once the retry is on the calls topic, if
        the task's retries allow one for this error; as ``failed`` otherwise."""
        call = job.execution.call
        task = self.tasks.get(call.task)
        policy = task.retries if task is not None else None
        self.metrics.executions_failed.labels(task=call.task).inc()
        lost = outcome.fields["error"]["type"] == "WorkerLost"
        if (policy is None or not policy.allows(call.attempt)
                or not (lost or (outcome.error is not None
                                 and policy.retries_on(outcome.error)))):
            self._emit(event("failed", call, now_ms(), worker=self.name, **outcome.fields),
                       done=job)
            return
        assert self.producer is not None  # noqa: S101
        failed_ms = now_ms()
        retry = dataclasses.replace(call, attempt=call.attempt + 1,
                                    not_before_ms=failed_ms + policy.delay_ms(call.attempt))
        if call.collected is not None:
            # A collected run is retried alone with its list, keyed by its id: the key's later
            # calls make windows of their own, and no argument is dropped or run twice.
            retry = dataclasses.replace(retry, args=[call.collected], kwargs={}, defer_key=None,
                                        max_wait_ms=None, leading=False, collect=None,
                                        collected=None)

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:  # the retry is not on Kafka: the execution ends here
                logger.error("retry %d of %s not delivered: %s", call.attempt, call.id, err)
                self._emit(event("failed", call, now_ms(), worker=self.name, **outcome.fields),
                           done=job)
                return
            self.metrics.retries.labels(task=call.task).inc()
            self._emit(event("retrying", call, failed_ms, worker=self.name, attempt=call.attempt,
                             next_attempt=retry.attempt, retry_at_ms=retry.not_before_ms,
                             **outcome.fields), done=job)

        self.producer.produce(self.settings.calls_topic, key=retry.key.encode(),
                              value=dumps(retry.to_dict()), on_delivery=delivered)

    # -- reporting and committing ---------------------------------------------------------------

    def _dead_letter(self, message: Message, error: InvalidRecord) -> None:
        """Park an unreadable execution record and say why; its offset is then done."""
        assert self.producer is not None  # noqa: S101
        partition, offset = message.partition(), message.offset()
        parked = dead_letter(error, self.settings.executions_topic, partition, offset,
                             message.key(), message.value(), now_ms())
        logger.error("dead-lettering execution record %s@%s: %s", partition, offset,
                     parked.reason)
        self.metrics.dead_letters.labels(reason=error.code).inc()

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is None and partition is not None and offset is not None:
                self.offsets.finish(partition, offset)

        self.producer.produce(self.settings.dead_letter_topic, key=parked.key,
                              value=parked.value, headers=parked.headers, on_delivery=delivered)
        self.producer.produce(self.settings.events_topic, key=parked.event_key,
                              value=parked.event)

    def _emit(self, payload: dict[str, Any], done: Job | None = None) -> None:
        """Publish an event; ``done``: the execution it ends here, whose offset is done once it
        is delivered (with the ``finished`` record, for a key that runs alone)."""
        records = [(self.settings.events_topic, payload["id"].encode(), dumps(payload))]
        if (done is not None and payload["type"] != "retrying"  # a retry is on the calls topic
                and done.execution.call.if_running == "after"):
            records.append(self._finished_record(done))
        self._produce_all(records, done)

    def _finish(self, job: Job) -> None:
        """The execution ended, as the events say: its offset is done. A key that runs alone is
        told again that it ended, in case the worker that ran it died before it could."""
        if job.execution.call.if_running != "after":
            self.offsets.finish(job.partition, job.offset)
            return
        self._produce_all([self._finished_record(job)], job)

    def _finished_record(self, job: Job) -> tuple[str, bytes, bytes]:
        """For ``if_running="after"``: the processor holds the key's next call until this."""
        call = job.execution.call
        return (self.settings.calls_topic, call.key.encode(),
                dumps(Control("finished", call.id, attempt=call.attempt).to_dict()))

    def _produce_all(self, records: list[tuple[str, bytes, bytes]], done: Job | None) -> None:
        assert self.producer is not None  # noqa: S101
        left = [len(records)]

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:  # the offset stays open: redelivered, the outcome is known
                logger.error("record for %s on %s not delivered: %s", msg.key(), msg.topic(),
                             err)
                return
            left[0] -= 1
            if done is not None and left[0] == 0:
                self.offsets.finish(done.partition, done.offset)

        for topic, key, value in records:
            while True:
                try:
                    self.producer.produce(topic, key=key, value=value, on_delivery=delivered)
                    break
                except BufferError:
                    self.producer.poll(0.05)

    def _remember(self, job: Job) -> None:
        self.done_ids[job.id] = max(job.attempt, self.done_ids.get(job.id, 0))
        self.done_ids.move_to_end(job.id)
        if len(self.done_ids) > REMEMBERED_IDS:
            self.done_ids.popitem(last=False)

    def _commit(self) -> None:
        assert self.consumer is not None  # noqa: S101
        offsets = self.offsets.committable()
        if not offsets:
            return
        topic = self.settings.executions_topic
        try:
            self.consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()],
                                 asynchronous=False)
        except Exception as exc:  # a rebalance in progress; the next commit catches up
            logger.warning("commit failed: %s", exc)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        now = time.monotonic()
        self.fresh.update((tp.partition, now) for tp in partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Hand the partitions back cleanly: finish what runs from them, commit, drop the rest."""
        revoked = {tp.partition for tp in partitions}
        deadline = time.monotonic() + self.settings.shutdown_timeout
        while (any(job.partition in revoked for job in self.running.values())
               and time.monotonic() < deadline):
            self._report_outcomes(block=0.1)
        assert self.producer is not None  # noqa: S101
        self.producer.flush(self.settings.shutdown_timeout)
        self._commit()
        self.backlog.drop(lambda job: job.partition not in revoked)
        for partition in revoked:
            self.offsets.forget(partition)
            self.fresh.pop(partition, None)

