"""Publishing calls and reading their outcomes: the Kafka side of ``task.submit()`` and
``execution.result()``, usable from threads and from asyncio alike.

The client knows records, not tasks: :class:`~cfstream.task.Task` builds a call's record and the
client puts it on the calls topic; :class:`~cfstream.execution.Execution` waits through the
client's one events reader (:class:`~cfstream.events.waiting.Waiters`).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from collections import deque
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from cfstream.codec import dumps, loads
from cfstream.errors import CfStreamError, SubmitError
from cfstream.events.waiting import Waiters
from cfstream.kafka.config import producer_config
from cfstream.kafka.topics import ensure_topics
from cfstream.settings import Settings, get_settings
from cfstream.wire import Call, Control

logger = logging.getLogger(__name__)

# Seconds to wait for queued calls to reach the broker when the process exits.
EXIT_FLUSH_TIMEOUT = 10.0
# Only failed deliveries call back into Python: a report per delivered call cost as much as the
# produce itself, and failures are all that result() has to surface.
PRODUCER_OVERRIDES: dict[str, Any] = {"delivery.report.only.error": True}
# How long the overflow thread lets deliveries drain before it offers a record again.
OVERFLOW_WAIT = 0.05


class Client:
    """Publishes calls and waits for their outcome. Creates its Kafka clients on first use."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._producer: Producer | None = None
        self._waiters: Waiters | None = None
        self._lock = threading.Lock()
        self._setup_error: Exception | None = None
        # Records that met a full local queue inside an event loop, in order; a thread hands
        # them to the producer so that submit never blocks the loop.
        self._overflow: deque[tuple[str, bytes, bytes]] = deque()
        self._overflow_lock = threading.Lock()
        self._overflow_thread: threading.Thread | None = None
        # Read once: submit is hot, and a settings property formats the topic name on each read.
        self._calls_topic = self.settings.calls_topic
        self._max_payload_bytes = self.settings.max_payload_bytes

    # -- publishing -------------------------------------------------------------------------

    def publish(self, call: Call) -> str:
        """Put ``call`` on the calls topic; returns its id. Delivery errors reach waiters."""
        self.send(call.task, call.key.encode(), dumps(call.to_dict()))
        return call.id

    def send(self, task: str, key: bytes, value: bytes) -> None:
        """Put one call record on the calls topic, without blocking an event loop."""
        if len(value) > self._max_payload_bytes:
            raise SubmitError(
                f"call to {task} is {len(value)} bytes, over the limit of "
                f"{self._max_payload_bytes} (CFSTREAM_MAX_PAYLOAD_BYTES); pass ids "
                "and load large data inside the task"
            )
        producer = self._producer or self.producer()
        if self._overflow:
            self._queue(task, key, value)
            return
        while True:
            try:
                producer.produce(self._calls_topic, value, key)
                break
            except BufferError:
                if _in_event_loop():
                    self._queue(task, key, value)
                    return
                producer.poll(OVERFLOW_WAIT)  # local queue full: let deliveries drain
        producer.poll(0)

    def send_control(self, key: str, control: Control) -> list[KafkaError]:
        """Put a control record (a cancel) on the calls topic, keyed as the call it is about.
        The list it returns gets the error if Kafka refuses the record (the producer reports
        failures only: what it did is seen in the events)."""
        refused: list[KafkaError] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                refused.append(err)

        producer = self._producer or self.producer()
        while True:
            try:
                producer.produce(self._calls_topic, dumps(control.to_dict()), key.encode(),
                                 on_delivery=delivered)
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(OVERFLOW_WAIT)
        producer.poll(0)
        return refused

    def producer(self) -> Producer:
        """The client's producer. Inside an event loop the topics are checked on a thread, and
        a failure there is raised by the next submit."""
        with self._lock:
            if self._setup_error is not None:
                raise SubmitError(f"cannot submit: {self._setup_error}") from self._setup_error
            if self._producer is None:
                if _in_event_loop():
                    threading.Thread(target=self._ensure_topics, name="cfstream-topics",
                                     daemon=True).start()
                else:
                    ensure_topics(self.settings)
                self._producer = Producer(producer_config(
                    self.settings, on_delivery=self._delivered, **PRODUCER_OVERRIDES))
            return self._producer

    def flush(self, timeout: float = EXIT_FLUSH_TIMEOUT) -> int:
        """Wait for queued calls to reach Kafka; returns how many are still queued."""
        thread = self._overflow_thread
        if thread is not None:
            thread.join(timeout)
        if self._producer is None:
            return len(self._overflow)
        return int(self._producer.flush(timeout)) + len(self._overflow)

    def _ensure_topics(self) -> None:
        try:
            ensure_topics(self.settings)
        except (CfStreamError, KafkaException) as exc:
            logger.error("cfstream topics could not be checked or created: %s", exc)
            with self._lock:
                self._setup_error = exc

    def _queue(self, task: str, key: bytes, value: bytes) -> None:
        with self._overflow_lock:
            self._overflow.append((task, key, value))
            if self._overflow_thread is None:
                self._overflow_thread = threading.Thread(
                    target=self._drain, name="cfstream-overflow", daemon=True)
                self._overflow_thread.start()

    def _drain(self) -> None:
        producer = self.producer()
        while True:
            with self._overflow_lock:
                if not self._overflow:
                    self._overflow_thread = None
                    return
                _, key, value = self._overflow[0]
                try:
                    producer.produce(self._calls_topic, value, key)
                except BufferError:
                    pass
                else:
                    self._overflow.popleft()
                    continue
            producer.poll(OVERFLOW_WAIT)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            return
        # Only failures come here: the call's id is in the record.
        try:
            call = loads(msg.value() or b"{}")
        except ValueError:
            call = {}
        logger.error("call %s to %s was not delivered: %s", call.get("id"), call.get("task"), err)
        if call.get("id"):
            self.waiters().fail(call["id"], f"call {call['id']} never reached Kafka: {err}")

    # -- waiting ----------------------------------------------------------------------------

    def waiters(self) -> Waiters:
        """The client's one events reader, shared by every waiter in the process."""
        with self._lock:
            if self._waiters is None:
                self._waiters = Waiters(self.settings, tick=self._poll_deliveries)
            return self._waiters

    def delivery_error(self, execution_id: str) -> str | None:
        """Why the call never reached Kafka, if it failed to (of the last failures)."""
        self._poll_deliveries()
        return self.waiters().undelivered(execution_id)

    def _poll_deliveries(self) -> None:
        if self._producer is not None:
            self._producer.poll(0)

    def close(self) -> None:
        left = self.flush()
        if left:
            logger.error("%d calls were still queued for Kafka at close", left)
        if self._waiters is not None:
            self._waiters.close()
            self._waiters = None


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


_current: Client | None = None
_current_lock = threading.Lock()


def current_client() -> Client:
    """The process's client, built from the environment unless :func:`configure` set one."""
    global _current
    current = _current  # no lock on the submit path: reading a global is atomic
    if current is not None:
        return current
    with _current_lock:
        if _current is None:
            _current = Client()
        return _current


def configure(settings: Settings | None = None) -> Client:
    """Replace the process's client (closing the old one); returns the new one."""
    global _current
    with _current_lock:
        old, _current = _current, Client(settings)
    if old is not None:
        old.close()
    return _current


@atexit.register
def _flush_at_exit() -> None:
    if _current is not None:
        _current.close()
