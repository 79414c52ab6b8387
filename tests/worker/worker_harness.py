"""A worker driven in memory: stand-ins for its consumer, producer and events reader.

For unit tests of the loop's seams only; tests/pipeline runs real workers on the real broker.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from cfstream.codec import dumps
from cfstream.ids import new_execution_id
from cfstream.settings import Settings
from cfstream.task import Task
from cfstream.wire import Call, FiredCall
from cfstream.worker.loop import Worker
from cfstream.worker.seen import SeenEvents

TOPIC = "cfstream.executions"
NOW = 1_700_000_000_000


class FakeMessage:
    def __init__(self, value: bytes | None, offset: int, key: bytes | None = b"k",
                 partition: int = 0, fired_ms: int = NOW, topic: str = TOPIC) -> None:
        self._value, self._offset, self._key = value, offset, key
        self._partition, self._fired_ms, self._topic = partition, fired_ms, topic

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes | None:
        return self._key

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return 2, self._fired_ms  # TIMESTAMP_LOG_APPEND_TIME


class FakeConsumer:
    def __init__(self, partitions: tuple[int, ...] = (0,)) -> None:
        self.waiting: deque[FakeMessage] = deque()
        self.commits: list[dict[int, int]] = []
        self.partitions = [TopicPartition(TOPIC, p) for p in partitions]
        self.paused: set[int] = set()  # partitions
        self.positions: dict[int, int] = {}  # partition -> the offset after the last returned
        self.sought: list[tuple[int, int]] = []
        self.high: dict[int, int] = {}  # partition -> its high watermark, once set

    def poll(self, timeout: float = 0) -> FakeMessage | None:
        message = self._next()
        if message is None:
            time.sleep(min(timeout, 0.01))
        return message

    def consume(self, num_messages: int = 1, timeout: float = 0) -> list[FakeMessage]:
        taken = []
        while len(taken) < num_messages and (message := self._next()) is not None:
            taken.append(message)
        return taken

    def _next(self) -> FakeMessage | None:
        """The first record waiting on a partition not paused."""
        for i, message in enumerate(self.waiting):
            if message.partition() not in self.paused:
                del self.waiting[i]
                self.positions[message.partition()] = message.offset() + 1
                return message
        return None

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.positions.get(tp.partition, -1001))
                for tp in partitions]

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        return 0, self.high.get(tp.partition, -1001)

    def seek(self, tp: TopicPartition) -> None:
        """As librdkafka: the position is unknown until the next record (what is waiting lies
        past it)."""
        self.sought.append((tp.partition, tp.offset))
        self.positions.pop(tp.partition, None)

    def assignment(self) -> list[TopicPartition]:
        return self.partitions

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {tp.partition for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {tp.partition for tp in partitions}

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        self.commits.append({tp.partition: tp.offset for tp in offsets})

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.callbacks = callbacks

    def rebalance(self, assign: tuple[int, ...] = (), revoke: tuple[int, ...] = ()) -> None:
        """What librdkafka does on a rebalance: call the worker back from poll(). As
        librdkafka, it keeps a revoked partition's pause: assigned again, it stays paused."""
        if revoke:
            self.callbacks["on_revoke"](self, [TopicPartition(TOPIC, p) for p in revoke])
            self.partitions = [tp for tp in self.partitions if tp.partition not in revoke]
        if assign:
            self.partitions += [TopicPartition(TOPIC, p) for p in assign]
            self.callbacks["on_assign"](self, [TopicPartition(TOPIC, p) for p in assign])

    def close(self) -> None:
        pass


class Sent:
    def __init__(self, topic: str, key: bytes | None, value: bytes | None,
                 headers: Any) -> None:
        self.topic, self.key, self.value, self.headers = topic, key, value, headers

    @property
    def record(self) -> dict[str, Any]:
        return json.loads(self.value or b"")  # type: ignore[no-any-return]


class FakeProducer:
    """Delivers on poll() and flush(), as librdkafka does; records to ``failing`` topics fail,
    and so do events of the ``failing_events`` types."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.failing: set[str] = set()
        self.failing_events: set[str] = set()
        self._deliveries: list[tuple[Any, Sent]] = []

    def produce(self, topic: str, key: bytes | None = None, value: bytes | None = None,
                on_delivery: Any = None, headers: Any = None) -> None:
        sent = Sent(topic, key, value, headers)
        self.sent.append(sent)
        self._deliveries.append((on_delivery, sent))

    def poll(self, timeout: float = 0) -> int:
        return self._deliver()

    def flush(self, timeout: float = 0) -> int:
        while self._deliver():
            pass
        return 0

    def _deliver(self) -> int:
        deliveries, self._deliveries = self._deliveries, []
        for callback, sent in deliveries:
            if callback is not None:
                error = (KafkaError(KafkaError.REQUEST_TIMED_OUT) if self._fails(sent) else None)
                callback(error, FakeMessage(sent.value, -1, sent.key, topic=sent.topic))
        return len(deliveries)

    def _fails(self, sent: Sent) -> bool:
        return sent.topic in self.failing or (
            bool(self.failing_events) and sent.topic.endswith(".events")
            and sent.record.get("type") in self.failing_events)

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [sent.record for sent in self.sent if sent.topic == topic]


class FakeSeen(SeenEvents):
    """What other workers did, as given: id -> the most advanced event."""

    def __init__(self, known: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__(Settings())
        self.events = known or {}
        self.syncs = 0

    def known(self, execution_id: str) -> dict[str, Any] | None:
        return self.events.get(execution_id)

    @property  # type: ignore[override]
    def kept(self) -> int:
        """Changes whenever a test adds or replaces an event, as the reader's count would."""
        return hash(tuple((k, tuple(v.items())) for k, v in self.events.items()))

    @kept.setter
    def kept(self, value: int) -> None:
        pass  # SeenEvents.__init__ sets it

    def read_since(self, since_ms: int) -> bool:
        return False

    def sync(self, timeout: float) -> bool:
        self.syncs += 1
        return True

    def close(self) -> None:
        pass


class Harness:
    def __init__(self, tasks: list[Task[Any, Any]], concurrency: int = 3,
                 seen: FakeSeen | None = None, spans: Any = None) -> None:
        self.settings = Settings(worker_concurrency=concurrency)
        self.consumer = FakeConsumer()
        self.producer = FakeProducer()
        self.seen = seen or FakeSeen()
        self.worker = Worker(self.settings, {t.name: t for t in tasks},
                             self.consumer, self.producer,  # type: ignore[arg-type]
                             seen=self.seen, spans=spans)
        self.offset = 0

    def feed(self, *records: FiredCall | bytes | None, partition: int = 0) -> list[int]:
        """Put records on the executions topic; their offsets."""
        offsets = []
        for record in records:
            value = dumps(record.to_dict()) if isinstance(record, FiredCall) else record
            key = record.call.key.encode() if isinstance(record, FiredCall) else b"k"
            self.consumer.waiting.append(FakeMessage(value, self.offset, key, partition))
            offsets.append(self.offset)
            self.offset += 1
        return offsets

    def events(self, *types: str) -> list[dict[str, Any]]:
        return [e for e in self.producer.on(self.settings.events_topic)
                if not types or e["type"] in types]

    def run_until(self, done: Any, timeout: float = 30) -> None:
        """Turn the loop until ``done()``; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"not done within {timeout}s: {self.events()}"
            self.worker.turn(0.01)

    def ended(self, count: int) -> Any:
        return lambda: len(self.events("succeeded", "failed", "deferred", "retrying")) >= count

    def committed(self) -> dict[int, int]:
        """What the worker commits once Kafka has taken everything sent so far."""
        self.producer.flush()
        self.worker.commit()
        out: dict[int, int] = {}
        for commit in self.consumer.commits:
            out.update(commit)
        return out


def fired(task: str, args: list[Any], *, key: str | None = None, at: int = NOW,
          call_id: str | None = None, **options: Any) -> FiredCall:
    call = Call(id=call_id or new_execution_id(at), task=task, args=args, kwargs={},
                submitted_ms=at, defer_key=key, **options)
    return FiredCall(call=call, due_ms=at, fired_ms=at + 2)
