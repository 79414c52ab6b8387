"""Submitting calls: the producer side of cfstream, usable from any service."""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from cfstream.codec import dumps, to_json_value
from cfstream.errors import SubmitError
from cfstream.events.reader import EventReader
from cfstream.execution import Execution
from cfstream.ids import new_execution_id
from cfstream.kafka.config import producer_config
from cfstream.kafka.topics import ensure_topics
from cfstream.settings import Settings, get_settings
from cfstream.task import Task, to_ms
from cfstream.wire import KEY_SEPARATOR, Call

logger = logging.getLogger(__name__)

# Seconds to wait for queued calls to reach the broker when the process exits.
EXIT_FLUSH_TIMEOUT = 10.0
# Only failed deliveries call back into Python: a report per delivered call cost as much as the
# produce itself, and failures are all that result() has to surface.
PRODUCER_OVERRIDES: dict[str, Any] = {"delivery.report.only.error": True}


class Client:
    """Publishes calls and waits for their outcome. Creates its Kafka clients on first use."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._producer: Producer | None = None
        self._reader: EventReader | None = None
        self._lock = threading.Lock()
        self._delivery_errors: dict[str, str] = {}
        # Read once: submit is hot, and a settings property formats the topic name on each read.
        self._calls_topic = self.settings.calls_topic
        self._max_payload_bytes = self.settings.max_payload_bytes

    # -- submitting -------------------------------------------------------------------------

    def submit_task(self, task: Task[Any, Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Execution:
        args_json, kwargs_json, defer_key = task.encode_call(args, kwargs)
        now = int(time.time() * 1000)
        call_id = new_execution_id(now)
        key, value = task.records.record(call_id, args_json, kwargs_json, now, defer_key)
        self.send(task.name, key, value)
        return Execution(call_id, task=task.name, client=self)

    def submit(self, task: str, args: list[Any] | tuple[Any, ...] = (),
               kwargs: dict[str, Any] | None = None, *,
               delay: dt.timedelta | float | int = 0, defer_key: str | None = None,
               max_wait: dt.timedelta | float | int | None = None) -> Execution:
        """Submit a call by task name, without the task's code (``"module:function"``)."""
        if not task or KEY_SEPARATOR in task:
            raise SubmitError(f"task name {task!r} must be non-empty without {KEY_SEPARATOR!r}")
        delay_ms = to_ms(delay, "delay") or 0
        max_wait_ms = to_ms(max_wait, "max_wait")
        if max_wait_ms is not None and (defer_key is None or max_wait_ms <= delay_ms):
            raise SubmitError("max_wait needs a defer_key and must be greater than delay")
        if defer_key is not None and not isinstance(defer_key, str):
            raise SubmitError(f"defer_key must be a string, got {type(defer_key).__name__}")
        positional = {f"#{i}": value for i, value in enumerate(args)}
        return self.publish(new_call(task, positional, kwargs or {}, delay_ms=delay_ms,
                                     defer_key=defer_key, max_wait_ms=max_wait_ms))

    def publish(self, call: Call) -> Execution:
        """Put ``call`` on the calls topic; delivery errors surface in ``result()``."""
        self.send(call.task, call.key.encode(), dumps(call.to_dict()))
        return Execution(call.id, task=call.task, client=self)

    def send(self, task: str, key: bytes, value: bytes) -> None:
        """Put one call record on the calls topic; delivery errors surface in ``result()``."""
        if len(value) > self._max_payload_bytes:
            raise SubmitError(
                f"call to {task} is {len(value)} bytes, over the limit of "
                f"{self._max_payload_bytes} (CFSTREAM_MAX_PAYLOAD_BYTES); pass ids "
                "and load large data inside the task"
            )
        producer = self._producer or self.producer()
        while True:
            try:
                producer.produce(self._calls_topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)  # local queue full: let deliveries drain, then retry
        producer.poll(0)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            return
        # Only failures come here: the call's id is in the record.
        call = json.loads(msg.value() or b"{}")
        self._delivery_errors[call.get("id", "")] = str(err)
        logger.error("call %s to %s was not delivered: %s", call.get("id"), call.get("task"), err)

    def producer(self) -> Producer:
        with self._lock:
            if self._producer is None:
                ensure_topics(self.settings)
                self._producer = Producer(producer_config(
                    self.settings, on_delivery=self._delivered, **PRODUCER_OVERRIDES))
            return self._producer

    def delivery_error(self, execution_id: str) -> str | None:
        if self._producer is not None:
            self._producer.poll(0)
        return self._delivery_errors.get(execution_id)

    def flush(self, timeout: float = EXIT_FLUSH_TIMEOUT) -> int:
        """Wait for queued calls to reach Kafka; returns how many are still queued."""
        if self._producer is None:
            return 0
        return int(self._producer.flush(timeout))

    # -- waiting ----------------------------------------------------------------------------

    def reader(self) -> EventReader:
        with self._lock:
            if self._reader is None:
                self._reader = EventReader(self.settings)
            return self._reader

    def close(self) -> None:
        left = self.flush()
        if left:
            logger.error("%d calls were still queued for Kafka at close", left)
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def new_call(task: str, args: dict[str, Any], kwargs: dict[str, Any], *, delay_ms: int,
             defer_key: str | None, max_wait_ms: int | None) -> Call:
    """A call stamped now. ``args`` maps a name for each positional argument (used in errors)
    to its value, in order."""
    now = int(time.time() * 1000)
    return Call(
        id=new_execution_id(now),
        task=task,
        args=[to_json_value(v, f"{task}: argument {name!r}") for name, v in args.items()],
        kwargs={k: to_json_value(v, f"{task}: argument {k!r}") for k, v in kwargs.items()},
        submitted_ms=now,
        delay_ms=delay_ms,
        defer_key=defer_key,
        max_wait_ms=max_wait_ms,
    )


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


def submit(task: str, args: list[Any] | tuple[Any, ...] = (),
           kwargs: dict[str, Any] | None = None, **options: Any) -> Execution:
    """``cf.submit("module:task", args, kwargs, delay=..., defer_key=..., max_wait=...)``."""
    return current_client().submit(task, args, kwargs, **options)


@atexit.register
def _flush_at_exit() -> None:
    if _current is not None:
        _current.close()
