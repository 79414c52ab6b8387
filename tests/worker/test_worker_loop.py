"""The worker's loop (cfstream.worker.loop) on in-memory stand-ins: what runs, what is skipped,
what is committed when. tests/pipeline runs the same on the real broker, with real processes."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from worker_harness import NOW, TOPIC, fired

from cfstream.retries import Retries
from cfstream.task import Task
from cfstream.worker import loop, starting

RAN: list[int] = []
GATE = threading.Event()


def record(n: int) -> int:
    RAN.append(n)
    return n


def gated(n: int) -> int:
    assert GATE.wait(30)
    return n


def flaky() -> None:
    raise ConnectionError("try again")


TASKS = [Task(fn=record, name="t:record"), Task(fn=gated, name="t:gated"),
         Task(fn=flaky, name="t:flaky", retries=Retries(limit=2, delay_min=5)),
         Task(fn=flaky, name="t:flaky_once")]


@pytest.fixture(autouse=True)
def _reset() -> None:
    RAN.clear()
    GATE.clear()


def test_an_offset_is_committed_once_the_outcome_is_delivered(harness_of: Any) -> None:
    harness = harness_of(TASKS)
    harness.producer.failing_events.add("succeeded")
    harness.feed(fired("t:record", [1]))
    harness.run_until(lambda: RAN == [1] and not harness.worker.dispatcher.running)
    harness.worker.turn()
    assert harness.committed() == {}  # not delivered: read again by the next owner
    harness.producer.failing_events.clear()
    harness.feed(fired("t:record", [2]))
    harness.run_until(lambda: RAN == [1, 2] and len(harness.events("succeeded")) == 2)
    harness.worker.turn()
    assert harness.committed() == {}  # the first is still open
    assert harness.worker.offsets.pending(0) == 2


def test_a_task_begins_only_once_kafka_has_its_started_event(harness_of: Any) -> None:
    harness = harness_of(TASKS)
    harness.producer.failing_events.add("started")
    harness.feed(fired("t:record", [1]))
    harness.run_until(lambda: len(harness.events("started")) >= 3)  # produced again and again
    assert RAN == []
    harness.producer.failing_events.clear()
    harness.run_until(lambda: len(harness.events("succeeded")) == 1)
    assert RAN == [1]


def test_a_waiting_turn_ends_when_a_task_does(harness_of: Any) -> None:
    """With tasks running and nothing else to do, the loop waits for them, not out its wait:
    an outcome is reported as soon as the task returns."""
    harness = harness_of(TASKS)
    harness.feed(fired("t:gated", [1]))
    harness.run_until(lambda: harness.worker.dispatcher.running and not harness.worker.starts)
    threading.Timer(0.2, GATE.set).start()
    began = time.monotonic()
    harness.worker.turn(10.0)
    assert time.monotonic() - began < 5.0  # not the 10 s asked for
    assert harness.worker.offsets.pending(0) == 1 and not harness.worker.dispatcher.running
    harness.run_until(harness.ended(1))


def test_an_execution_that_ran_here_is_not_run_again(harness_of: Any) -> None:
    harness = harness_of(TASKS)
    once = fired("t:record", [1])
    harness.feed(once)
    harness.run_until(harness.ended(1))
    harness.feed(once)  # redelivered, e.g. after a failed commit
    harness.run_until(lambda: harness.committed() == {0: 2})
    assert RAN == [1]
    assert len(harness.events("started")) == 1


def test_queued_calls_with_one_key_run_once_with_the_latest_arguments(harness_of: Any) -> None:
    harness = harness_of(TASKS, concurrency=1)
    harness.feed(fired("t:gated", [0]))  # keeps the one slot busy while the rest queue up
    harness.run_until(lambda: len(harness.events("started")) == 1)
    calls = [fired("t:record", [n], key="k", at=NOW + n) for n in range(1, 4)]
    harness.feed(*calls)
    harness.run_until(lambda: len(harness.events("deferred")) == 2)
    GATE.set()
    harness.run_until(harness.ended(4))
    assert RAN == [3]
    deferred = harness.events("deferred")
    assert [e["successor"] for e in deferred] == [calls[1].call.id, calls[2].call.id]
    assert harness.committed() == {0: 4}


def test_an_attempt_another_worker_began_and_never_ended_is_lost(harness_of: Any) -> None:
    once = fired("t:flaky_once", [])
    retried = fired("t:flaky", [])
    harness = harness_of(TASKS)
    harness.seen.events.update({
        e.call.id: {"id": e.call.id, "type": "started", "worker": "other:1"}
        for e in (once, retried)})
    harness.feed(once, retried)
    harness.run_until(harness.ended(2))
    assert harness.events("started") == []  # neither runs here
    (failed,) = harness.events("failed")
    assert failed["id"] == once.call.id and failed["error"]["type"] == "WorkerLost"
    assert "other:1" in failed["error"]["message"]
    (retrying,) = harness.events("retrying")
    assert retrying["id"] == retried.call.id and retrying["next_attempt"] == 2
    (retry,) = harness.producer.on(harness.settings.calls_topic)
    assert retry["id"] == retried.call.id and retry["attempt"] == 2
    assert harness.committed() == {0: 2}


@pytest.mark.parametrize(("known", "attempt", "runs"), [
    ({"type": "succeeded"}, 1, False), ({"type": "retrying"}, 1, False),
    ({"type": "deferred"}, 1, False), ({"type": "scheduled"}, 1, True),
    ({"type": "started", "attempt": 1}, 2, True), ({"type": "retrying", "attempt": 1}, 2, True),
    ({"type": "started", "attempt": 2}, 2, False), ({"type": "succeeded", "attempt": 2}, 1, False),
])
def test_what_the_events_say_decides_whether_a_redelivery_runs(
        harness_of: Any, known: dict[str, Any], attempt: int, runs: bool) -> None:
    """An attempt runs unless the events show that it, or a later one, began or ended."""
    retry = {"attempt": attempt, "not_before_ms": NOW} if attempt > 1 else {}
    execution = fired("t:record", [7], **retry)
    harness = harness_of(TASKS)
    harness.seen.events[execution.call.id] = {"id": execution.call.id, **known}
    harness.feed(execution)
    harness.run_until(lambda: harness.committed() == {0: 1})
    assert RAN == ([7] if runs else [])


def test_a_redelivery_that_ran_elsewhere_is_not_merged_with_a_newer_call(
        harness_of: Any) -> None:
    """After a worker dies, its uncommitted executions come again: one that had already run is
    not reported as deferred to a newer call of its key (it ran; its waiters have its result)."""
    ran, newer = (fired("t:record", [n], key="k", at=NOW + n) for n in (1, 2))
    harness = harness_of(TASKS)
    harness.seen.events[ran.call.id] = {"id": ran.call.id, "type": "succeeded", "worker": "w:1"}
    harness.feed(ran, newer)
    harness.run_until(harness.ended(1))
    assert RAN == [2]
    assert harness.events("deferred") == []
    assert harness.committed() == {0: 2}


def test_an_execution_that_ended_elsewhere_while_it_queued_here_does_not_run(
        harness_of: Any) -> None:
    """Checked when taken, and again as it leaves the backlog: events read in between count."""
    first, queued = fired("t:gated", [1]), fired("t:record", [2])
    harness = harness_of(TASKS, concurrency=1)
    harness.feed(first, queued)
    harness.worker.turn()  # both taken; only the first has a thread
    harness.run_until(lambda: first.call.id in harness.worker.dispatcher.running)
    assert len(harness.worker.backlog) == 1
    harness.seen.events[queued.call.id] = {"id": queued.call.id, "type": "succeeded",
                                           "worker": "w:1"}
    GATE.set()
    harness.run_until(lambda: harness.committed() == {0: 2})
    assert RAN == []
    assert [e["id"] for e in harness.events("started")] == [first.call.id]


def test_a_failed_attempt_is_retried_through_the_calls_topic(harness_of: Any) -> None:
    harness = harness_of(TASKS)
    execution = fired("t:flaky", [])
    harness.feed(execution)
    harness.run_until(harness.ended(1))
    (retrying,) = harness.events("retrying")
    (retry,) = harness.producer.on(harness.settings.calls_topic)
    assert retry["attempt"] == 2 and retry["not_before_ms"] == retrying["retry_at_ms"]
    assert retrying["error"]["type"] == "ConnectionError"
    assert harness.committed() == {0: 1}


def test_a_retry_kafka_does_not_take_ends_the_execution_as_failed(harness_of: Any) -> None:
    harness = harness_of(TASKS)
    harness.producer.failing.add(harness.settings.calls_topic)
    harness.feed(fired("t:flaky", []))
    harness.run_until(harness.ended(1))
    assert [e["type"] for e in harness.events()] == ["started", "failed"]
    assert harness.committed() == {0: 1}


def test_fetching_pauses_while_the_backlog_is_full(harness_of: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "MAX_BACKLOG", 10)
    harness = harness_of(TASKS, concurrency=1)
    harness.feed(fired("t:gated", [0]), *[fired("t:record", [n]) for n in range(1, 11)])
    harness.run_until(lambda: harness.consumer.paused)
    harness.feed(fired("t:record", [11]), fired("t:record", [12]))  # fetched, held back
    harness.worker.turn()
    assert len(harness.worker.backlog) + len(harness.worker.starts) + len(
        harness.worker.dispatcher.running) == 11
    GATE.set()
    harness.run_until(lambda: not harness.consumer.paused)
    # Sought where it stands, so that librdkafka fetches it now (cfstream.kafka.fetching).
    assert harness.consumer.sought == [(0, 11)]
    harness.run_until(lambda: len(RAN) == 12)
    assert harness.committed() == {0: 13}


def test_a_partition_paused_again_before_its_next_record_is_sought_where_the_worker_stands(
        harness_of: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """librdkafka forgets a partition's position at a seek, until its next record. Paused again
    before that (another partition filled the backlog), it is still sought at its resume: a
    plain resume would leave its fetcher asleep (cfstream.kafka.fetching)."""
    monkeypatch.setattr(loop, "MAX_BACKLOG", 10)
    harness = harness_of(TASKS, concurrency=1)
    harness.consumer.rebalance(assign=(1,))  # partitions 0 and 1
    harness.feed(*[fired("t:gated", [n]) for n in range(11)])  # partition 0, offsets 0..10
    harness.run_until(lambda: harness.consumer.paused)
    GATE.set()
    harness.run_until(lambda: not harness.consumer.paused)
    assert harness.consumer.sought == [(0, 11)]  # partition 1: none taken, none known
    harness.run_until(harness.ended(11))
    GATE.clear()
    # More than the worker may announce ahead: the rest fill the backlog, whatever the rates.
    more = 10 + starting.MOST_AHEAD_PER_THREAD + 1
    harness.feed(*[fired("t:gated", [n]) for n in range(11, 11 + more)], partition=1)
    harness.run_until(lambda: harness.consumer.paused)
    GATE.set()
    harness.run_until(lambda: not harness.consumer.paused)
    assert harness.consumer.sought == [(0, 11), (0, 11), (1, 11 + more)]
    harness.run_until(harness.ended(11 + more))
    assert harness.committed() == {0: 11, 1: 11 + more}


def test_a_partition_never_read_keeps_fetching_until_it_is_read(
        harness_of: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full backlog pauses only the partitions the worker has read from: it knows no offset to
    seek one it has not, and a plain resume would leave that one's fetcher asleep (where no
    other partition's seek wakes it). It is paused at the turn that first reads from it."""
    monkeypatch.setattr(loop, "MAX_BACKLOG", 10)
    harness = harness_of(TASKS, concurrency=1)
    harness.consumer.rebalance(assign=(1,))  # partitions 0 and 1
    harness.feed(*[fired("t:gated", [n]) for n in range(11)])  # partition 0
    harness.run_until(lambda: harness.consumer.paused)
    assert harness.consumer.paused == {0}
    later = harness.feed(*[fired("t:gated", [n]) for n in range(11, 14)], partition=1)
    harness.worker.turn()
    assert harness.consumer.paused == {0, 1}
    assert not harness.consumer.waiting  # taken while partition 0 was paused
    GATE.set()
    harness.run_until(lambda: not harness.consumer.paused)
    assert harness.consumer.sought == [(0, 11), (1, later[-1] + 1)]
    harness.run_until(harness.ended(14))
    assert harness.committed() == {0: 11, 1: later[-1] + 1}


def test_a_partition_revoked_while_paused_fetches_when_it_comes_back(
        harness_of: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """librdkafka keeps an application's pause on a partition it takes away (cooperative-sticky,
    librdkafka 2.16): the worker resumes it as it lets it go, or assigned here again it would
    never fetch. The partitions it keeps are resumed as before, sought where it stands."""
    monkeypatch.setattr(loop, "MAX_BACKLOG", 10)
    harness = harness_of(TASKS, concurrency=1)
    harness.consumer.rebalance(assign=(1,))
    harness.feed(*[fired("t:gated", [n]) for n in range(6)])
    harness.feed(*[fired("t:gated", [n]) for n in range(6, 12)], partition=1)
    harness.run_until(lambda: harness.consumer.paused == {0, 1})
    GATE.set()
    harness.consumer.rebalance(revoke=(1,))
    assert harness.consumer.paused == {0} and harness.worker.paused == {0}
    harness.run_until(lambda: not harness.consumer.paused)
    assert harness.consumer.sought == [(0, 6)]
    harness.consumer.rebalance(assign=(1,))
    later = harness.feed(fired("t:record", [99]), partition=1)
    harness.run_until(lambda: 99 in RAN)
    assert harness.committed()[1] == later[0] + 1


def test_the_lag_gauge_counts_from_where_the_worker_stands(harness_of: Any) -> None:
    """Also after a seek, when librdkafka knows no position until the next record."""
    harness = harness_of(TASKS)
    harness.feed(*[fired("t:record", [n]) for n in range(5)])
    harness.run_until(lambda: len(RAN) == 5)
    harness.consumer.high[0] = 12
    harness.consumer.seek(TopicPartition(TOPIC, 0, 5))
    harness.worker._update_lag()
    lag = harness.worker.metrics.registry.get_sample_value(
        "cfstream_consumer_lag", {"topic": TOPIC, "partition": "0"})
    assert lag == 7


def test_a_revoked_partition_is_finished_committed_and_forgotten(harness_of: Any) -> None:
    harness = harness_of(TASKS, concurrency=1)
    harness.consumer.rebalance(assign=(1,))
    harness.feed(fired("t:gated", [0]), partition=1)
    harness.run_until(lambda: len(harness.events("started")) == 1)
    queued = fired("t:record", [1])
    harness.feed(queued, partition=1)
    harness.worker.turn()
    threading.Timer(0.2, GATE.set).start()
    harness.consumer.rebalance(revoke=(1,))  # waits for the running task, then commits it
    assert harness.consumer.commits[-1] == {1: 1}
    assert len(harness.events("succeeded")) == 1
    harness.run_until(lambda: not harness.worker.dispatcher.running)
    assert RAN == []  # the queued one is the next owner's now
    assert harness.worker.offsets.pending(1) == 0
