"""What a worker writes to Kafka, and when an execution's offset is done.

An execution's offset is done once what ends it here is delivered: its outcome event (or its
``deferred`` or ``retrying`` event, the retry itself on the calls topic first), and for a key
that runs one at a time (``if_running="after"``) the ``finished`` record that releases the key's
next call. A record that is not delivered leaves the offset open, so the execution is read again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from cfstream.clock import now_ms
from cfstream.codec import dumps
from cfstream.observability.metrics import WorkerMetrics
from cfstream.retries import Retries
from cfstream.settings import Settings
from cfstream.wire import Call, Control, InvalidRecord, dead_letter, event
from cfstream.worker.execute import Outcome
from cfstream.worker.jobs import Job, Tracing
from cfstream.worker.offsets import OffsetTracker
from cfstream.worker.retrying import next_attempt

logger = logging.getLogger(__name__)

Record = tuple[str, bytes, bytes]  # topic, key, value


class Reporter:
    def __init__(self, settings: Settings, producer: Producer, offsets: OffsetTracker,
                 metrics: WorkerMetrics, worker: str, spans: Tracing | None = None) -> None:
        self.settings = settings
        self.spans = spans  # the runs' spans, when the worker's tracing is on
        self.producer = producer
        self.offsets = offsets
        self.metrics = metrics
        self.worker = worker

    def started(self, job: Job, delivered: Callable[[Job, bool], None]) -> None:
        """Announce that ``job`` begins; ``delivered(job, ok)`` once Kafka has the event (ok) or
        refused it. The task may begin only after ``ok``: if this process dies mid-run, the next
        owner sees the event and does not run the task a second time."""
        self.metrics.count(self.metrics.executions_started, job.call.task)

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                logger.error("started event of %s not delivered: %s", job.id, err)
            delivered(job, err is None)

        started_ms = now_ms()
        if self.spans is not None:
            self.spans.started(job, started_ms)
        self._produce(self.settings.events_topic, job.id.encode(),
                      dumps(event("started", job.call, started_ms, worker=self.worker,
                                  due_ms=job.execution.due_ms, fired_ms=job.execution.fired_ms)),
                      on_delivery)

    def outcome(self, job: Job, outcome: Outcome, policy: Retries | None) -> None:
        if outcome.type == "succeeded":
            self.metrics.count(self.metrics.executions_succeeded, job.call.task)
            succeeded_ms = now_ms()
            self._emit(event("succeeded", job.call, succeeded_ms, worker=self.worker,
                             **outcome.fields), done=job)
            self._ended(job, succeeded_ms, outcome)
        else:
            self.failed(job, outcome, policy)

    def failed(self, job: Job, outcome: Outcome, policy: Retries | None) -> None:
        """Report a failed attempt: as ``retrying`` once the retry is on the calls topic, if
        ``policy`` allows one; as ``failed`` otherwise."""
        call = job.call
        self.metrics.count(self.metrics.executions_failed, call.task)
        failed_ms = now_ms()
        retry = next_attempt(call, policy, outcome, failed_ms)
        if retry is None:
            self._emit(event("failed", call, failed_ms, worker=self.worker, **outcome.fields),
                       done=job)
            self._ended(job, failed_ms, outcome)
            return
        if self.spans is not None:  # the next attempt is a child of this one
            retry = replace(retry, traceparent=self.spans.traceparent(job))

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:  # the retry is not on Kafka: the execution ends here
                logger.error("retry %d of %s not delivered: %s", call.attempt, call.id, err)
                ended_ms = now_ms()
                self._emit(event("failed", call, ended_ms, worker=self.worker,
                                 **outcome.fields), done=job)
                self._ended(job, ended_ms, outcome)
                return
            self.metrics.count(self.metrics.retries, call.task)
            self._emit(event("retrying", call, failed_ms, worker=self.worker,
                             attempt=call.attempt, next_attempt=retry.attempt,
                             retry_at_ms=retry.not_before_ms, **outcome.fields), done=job)
            self._ended(job, failed_ms, outcome, retry)

        self._produce(self.settings.calls_topic, retry.key.encode(), dumps(retry.to_dict()),
                      delivered)

    def deferred(self, loser: Job, winner: Job) -> None:
        """Two executions with one key queued here: ``loser`` will not run, its waiters follow
        ``winner``."""
        self.metrics.deferrals.labels(task=loser.call.task, where="backlog").inc()
        deferred_ms = now_ms()
        self._emit(event("deferred", loser.call, deferred_ms, successor=winner.id,
                         reason="backlog"), done=loser)
        if self.spans is not None:
            self.spans.deferred(loser, winner, deferred_ms)

    def ended_elsewhere(self, job: Job) -> None:
        """The events say another worker ended ``job``: its offset is done. A key that runs one
        at a time is told again that it ended, in case that worker died before it could."""
        if job.call.modes.if_running != "after":
            self.offsets.finish(job.partition, job.offset)
            return
        self._produce_all([self._finished_record(job)], job)

    def dead_letter(self, message: Message, error: InvalidRecord) -> None:
        """Park an unreadable execution record and say why; its offset is then done."""
        partition, offset = message.partition(), message.offset()
        parked = dead_letter(error, self.settings.executions_topic, partition, offset,
                             message.key(), message.value(), now_ms())
        logger.error("dead-lettering execution record %s@%s: %s", partition, offset,
                     parked.reason)
        self.metrics.dead_letters.labels(reason=error.code).inc()

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is None and partition is not None and offset is not None:
                self.offsets.finish(partition, offset)

        self._produce(self.settings.dead_letter_topic, parked.key, parked.value, delivered,
                      headers=parked.headers)
        self._produce(self.settings.events_topic, parked.event_key, parked.event)

    def _ended(self, job: Job, ts_ms: int, outcome: Outcome, retry: Call | None = None) -> None:
        if self.spans is not None:
            self.spans.ended(job, ts_ms, outcome, retry)

    def _emit(self, payload: dict[str, Any], done: Job | None = None) -> None:
        """Publish an event; ``done``: the execution it ends here (see the module's doc)."""
        records = [(self.settings.events_topic, payload["id"].encode(), dumps(payload))]
        if (done is not None and payload["type"] != "retrying"  # a retry is on the calls topic
                and done.call.modes.if_running == "after"):
            records.append(self._finished_record(done))
        self._produce_all(records, done)

    def _finished_record(self, job: Job) -> Record:
        """For ``if_running="after"``: the processor holds the key's next call until this."""
        call = job.call
        return (self.settings.calls_topic, call.key.encode(),
                dumps(Control("finished", call.id, attempt=call.attempt).to_dict()))

    def _produce_all(self, records: list[Record], done: Job | None) -> None:
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
            self._produce(topic, key, value, delivered)

    def _produce(self, topic: str, key: bytes | None, value: bytes | None,
                 on_delivery: Any = None, **options: Any) -> None:
        """Produce, waiting for room while the producer's queue is full."""
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, on_delivery=on_delivery,
                                      **options)
                return
            except BufferError:
                self.producer.poll(0.05)
