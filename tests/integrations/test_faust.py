"""A real faust app (its own process) submits cfstream calls from an agent, awaits them there,
and reads cfstream's events topic as typed records; a real processor and worker run the calls."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

# The pipeline tests' harness and tasks. No conftest.py here: pipeline tests import theirs as
# `conftest`, and one in this folder would be found first.
PIPELINE_DIR = Path(__file__).resolve().parent.parent / "pipeline"
if str(PIPELINE_DIR) not in sys.path:
    sys.path.insert(0, str(PIPELINE_DIR))

import pipeline_tasks  # noqa: E402
from harness import pipeline_conftest  # noqa: E402

import cfstream as cf
from cfstream.integrations.faust import Event, events_topic

pipeline_factory = pipeline_conftest().pipeline_factory

APP = Path(__file__).parent / "faust_app.py"
# A faust worker joins its group and creates its topics before its agents read; the agent then
# waits out the task's delay.
REPLY_TIMEOUT = 120


@dataclass
class Topic:
    """Every JSON record of a one-partition topic, read from the beginning."""

    consumer: Consumer
    alive: Callable[[], None]
    records: list[tuple[str, dict[str, Any], int]] = field(default_factory=list)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float = REPLY_TIMEOUT) -> tuple[str, dict[str, Any], int]:
        """The first (key, value, timestamp in ms) whose value matches; fails at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            for record in self.records:
                if predicate(record[1]):
                    return record
            self.alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"no such record within {timeout}s: {self.records}")
            message = self.consumer.poll(0.5)
            if message is not None and message.error() is None:
                self.records.append((message.key().decode(), json.loads(message.value()),
                                     message.timestamp()[1]))


@dataclass
class FaustApp:
    ask: Callable[..., None]
    replies: Topic
    seen: Topic
    events: Any  # the test's own reader of the events topic (harness.EventLog)


@pytest.fixture(scope="module")
def faust_app(pipeline_factory: Any, admin: AdminClient,
              kafka_bootstrap: str) -> Iterator[FaustApp]:
    """faust_app.py's worker beside a cfstream processor and worker, on one topic prefix."""
    pipeline = pipeline_factory()
    prefix = pipeline.settings.topic_prefix
    topics = {name: f"{prefix}.faust-{name}" for name in ("requests", "replies", "seen")}
    created = admin.create_topics([NewTopic(t, 1, 1) for t in topics.values()])
    for future in created.values():
        future.result(30)
    faust_worker = pipeline.services.start(
        "faust", ["worker", "--loglevel", "info"], command=[sys.executable, str(APP)],
        FAUST_APP_ID=f"{prefix}-faust",
        **{f"FAUST_{name.upper()}": topic for name, topic in topics.items()})

    def alive() -> None:
        if not faust_worker.running:
            raise AssertionError(f"the faust worker exited with {faust_worker.returncode}:\n"
                                 + pipeline.services.log("faust")[-5000:])

    def reader(topic: str) -> Topic:
        consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "unused",
                             "enable.auto.commit": False})
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        return Topic(consumer, alive)

    producer = Producer({"bootstrap.servers": kafka_bootstrap})

    def ask(tag: str, fail: bool = False) -> None:
        producer.produce(topics["requests"], json.dumps({"tag": tag, "fail": fail}).encode(),
                         tag.encode())
        assert producer.flush(10) == 0

    app = FaustApp(ask, reader(topics["replies"]), reader(topics["seen"]), pipeline.events)
    try:
        yield app
    finally:
        app.replies.consumer.close()
        app.seen.consumer.close()
        code = pipeline.services.stop("faust")
    assert code == 0, pipeline.services.log("faust")[-5000:]


def test_events_decode_as_typed_records_keeping_unknown_fields() -> None:
    raw = (b'{"v":1,"type":"succeeded","id":"x1","task":"m:t","defer_key":null,"ts_ms":7,'
           b'"worker":"w1","result":{"$uuid":"12345678-1234-5678-1234-567812345678"},'
           b'"from_a_later_version":[1]}')
    event = Event.loads(raw, serializer="json")
    assert (event.type, event.id, event.task, event.ts_ms, event.worker) == (
        "succeeded", "x1", "m:t", 7, "w1")
    assert event.decoded_result() == uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert event.error is None and event.successor is None
    assert event.from_a_later_version == [1]


def test_events_topic_is_the_prefixs_events_topic() -> None:
    app = faust.App("unit", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False)
    topic = events_topic(app, cf.Settings(topic_prefix="billing"))
    assert topic.get_topic_name() == "billing.events"
    assert (topic.key_type, topic.value_type) == (str, Event)


@pytest.mark.kafka
def test_an_agent_awaits_a_call_that_a_cfstream_worker_runs(faust_app: FaustApp) -> None:
    tag = f"ok-{uuid.uuid4().hex[:8]}"
    faust_app.ask(tag)

    _, reply, replied_ms = faust_app.replies.wait_for(lambda r: r["tag"] == tag)
    assert reply.get("error") is None
    assert reply["result"] == tag
    # The worker ran it, after the task's delay, and only then did the agent go on.
    scheduled = faust_app.events.one(reply["id"], "scheduled")
    succeeded = faust_app.events.one(reply["id"], "succeeded")
    assert scheduled["task"] == pipeline_tasks.after_seconds.name
    assert scheduled["due_ms"] - scheduled["submitted_ms"] == pipeline_tasks.D * 1000
    assert succeeded["worker"]
    assert succeeded["ts_ms"] >= scheduled["due_ms"]
    assert reply["replied_ms"] >= succeeded["ts_ms"] and replied_ms >= succeeded["ts_ms"]
    # The agent's event loop ran on while it waited: a 0.1 s timer ticked through the delay.
    assert reply["waited_s"] >= pipeline_tasks.D * 0.9
    assert reply["ticks_meanwhile"] >= 5

    # The other agent read the outcome from cfstream's events topic as a typed Event.
    key, event, _ = faust_app.seen.wait_for(lambda e: e["id"] == reply["id"])
    assert key == reply["id"]
    assert event == {
        "key": reply["id"], "is_event": True, "type": "succeeded", "id": reply["id"],
        "task": pipeline_tasks.after_seconds.name, "worker": succeeded["worker"],
        "ts_ms": succeeded["ts_ms"], "result": tag, "error_type": None,
    }


@pytest.mark.kafka
def test_a_failing_call_raises_execution_failed_in_the_agent(faust_app: FaustApp) -> None:
    tag = f"fail-{uuid.uuid4().hex[:8]}"
    faust_app.ask(tag, fail=True)

    _, reply, _ = faust_app.replies.wait_for(lambda r: r["tag"] == tag)
    assert "result" not in reply
    assert reply["error"] == {"class": "ExecutionFailed", "type": "ValueError",
                              "message": f"boom {tag} attempt 1", "execution_id": reply["id"]}
    failed = faust_app.events.one(reply["id"], "failed")
    assert failed["error"]["type"] == "ValueError"

    _, event, _ = faust_app.seen.wait_for(lambda e: e["id"] == reply["id"])
    assert (event["is_event"], event["type"], event["error_type"]) == (True, "failed", "ValueError")
    assert event["worker"] == failed["worker"]
