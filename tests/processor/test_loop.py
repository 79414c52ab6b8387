"""The processor's loop (cfstream.processor.loop) in this process, on the real broker."""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import rocksdict
from confluent_kafka import Consumer, KafkaException, TopicPartition

import cfstream as cf
from cfstream.clock import now_ms
from cfstream.kafka.config import consumer_config
from cfstream.kafka.topics import ensure_topics
from cfstream.processor import state
from cfstream.processor.db import changelog_offset
from cfstream.processor.loop import Processor
from cfstream.processor.outputs import Outputs
from cfstream.processor.partition import PartitionTask
from cfstream.processor.restore import RESTORE_BACKOFF, Restorer
from cfstream.processor.watermarks import Watermarks

pytestmark = pytest.mark.kafka


class Running:
    """A replica's loop in a thread of this process, and what it raised."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.processor.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def wait_ready(self, deadline: float) -> None:
        while not self.processor.ready():
            assert time.monotonic() < deadline and self.thread.is_alive(), self.error
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the loop; it must end, having raised nothing."""
        self.processor.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the loop did not stop"
        assert self.error is None, self.error


@pytest.mark.timeout(120)
def test_a_failed_turn_commits_nothing(settings: cf.Settings, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A turn that could not persist its batch stops the replica with its input uncommitted,
    so the next owner reads it again (committing on the way out would lose it)."""
    settings = replace(settings, state_dir=tmp_path, partitions=1)
    ensure_topics(settings)
    client = cf.Client(settings)
    cf.submit("tests:notify", [1], {}, client=client)
    assert client.flush(30) == 0
    client.close()

    def fail(task: PartitionTask, changelog_offset: Any) -> None:
        if task.position > 0:  # the turn that read the call
            raise OSError("No space left on device")

    monkeypatch.setattr(PartitionTask, "write", fail)
    with pytest.raises(OSError, match="No space"):
        Processor(settings).run()

    consumer = Consumer(consumer_config(settings, settings.processor_group))
    try:
        (committed,) = consumer.committed([TopicPartition(settings.calls_topic, 0)], timeout=30)
    finally:
        consumer.close()
    assert committed.offset < 1


@pytest.mark.timeout(120)
def test_a_failed_restore_is_tried_again_later_each_time(
        settings: cf.Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restore that fails (the changelog's leader gone, say) is retried with a growing pause,
    not in a loop as fast as it fails; once it succeeds the partition runs."""
    settings = replace(settings, state_dir=tmp_path, partitions=1)
    ensure_topics(settings)
    attempts: list[float] = []
    real = Restorer._catch_up

    def flaky(restorer: Restorer, db: Any, job: Any) -> int:
        attempts.append(time.monotonic())
        if len(attempts) <= 3:
            raise KafkaException("changelog leader not available")
        return real(restorer, db, job)

    monkeypatch.setattr(Restorer, "_catch_up", flaky)
    processor = Processor(settings)
    thread = threading.Thread(target=processor.run)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not processor.ready():
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.05)
    finally:
        processor.stop()
        thread.join(30)
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    assert len(attempts) == 4
    for gap, backoff in zip(gaps, (RESTORE_BACKOFF, 2 * RESTORE_BACKOFF, 4 * RESTORE_BACKOFF),
                            strict=True):
        assert backoff <= gap < backoff + 1.0, gaps


def test_a_proof_that_came_during_the_last_turn_is_not_waited_for(settings: cf.Settings) -> None:
    """The loop's wait for records takes the broker's latest answers into account: a call they
    prove due fires at once, rather than after a poll that waits for a proof already there."""
    now = now_ms()
    task = SimpleNamespace(next_due=now - 10, horizon_ms=now - 20, position=5)
    processor = Processor(settings)
    processor.tasks = {0: task}  # type: ignore[dict-item]
    processor.restorer = SimpleNamespace(results=queue.Queue(), retries={})  # type: ignore[assignment]
    processor.joined = True
    processor.watermarks = Watermarks(settings)
    try:
        processor.watermarks.answers[0] = (now - 5, 5)  # asked after the due time; all read
        assert processor._wait() == 0
        assert task.horizon_ms == now - 5
    finally:
        processor.watermarks.close()


@pytest.mark.timeout(120)
def test_a_call_due_in_a_batch_the_broker_has_not_acknowledged_fires_on_time(
        settings: cf.Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Turns do not wait for the broker: a batch's due index entries reach RocksDB once the
    broker has its records. When one of them comes due first, the loop writes every batch
    still on its way before its timer runs. Here the broker acknowledges nothing until the loop
    asks for everything (``keep=0``): a call due 300 ms after it was read must still fire then,
    not once 64 batches have piled up. At the stop every batch is written and its input
    committed.

    The call is made as soon as the replica is ready, so it also shows that a partition starts
    fetching at once: librdkafka wakes its fetcher when a partition's fetch starts, not when it
    is resumed, and a partition sought while paused was read ~1 s late (3 of 4 runs)."""
    settings = replace(settings, state_dir=tmp_path, partitions=1)
    ensure_topics(settings)
    real = Outputs.delivered
    asked: list[int] = []

    def slow_broker(outputs: Outputs, keep: int) -> list[Any]:
        asked.append(keep)
        return real(outputs, keep) if keep == 0 else []

    monkeypatch.setattr(Outputs, "delivered", slow_broker)
    processor = Processor(settings)
    running = Running(processor)
    consumer = Consumer(consumer_config(settings, None))
    try:
        deadline = time.monotonic() + 60
        running.wait_ready(deadline)
        client = cf.Client(settings)
        submitted = cf.submit("tests:notify", [1], {}, delay=0.3, client=client)
        assert client.flush(30) == 0
        client.close()
        consumer.assign([TopicPartition(settings.executions_topic, 0, 0)])
        fired = None
        while fired is None and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                fired = json.loads(message.value() or b"{}")
        assert fired is not None, "the call never fired"
        assert fired["id"] == submitted.id
        assert fired["fired_ms"] - fired["due_ms"] < 250, fired
        assert any(keep > 0 for keep in asked) and 0 in asked
    finally:
        consumer.close()
        running.stop()
    assert not processor.unwritten
    consumer = Consumer(consumer_config(settings, settings.processor_group))
    try:  # written at the stop, so committed
        (committed,) = consumer.committed([TopicPartition(settings.calls_topic, 0)], timeout=30)
    finally:
        consumer.close()
    assert committed.offset == 1


@pytest.mark.timeout(120)
def test_a_lost_partition_gets_no_more_changelog_records_or_writes(
        settings: cf.Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replica that learns it lost a partition (its session expired) while batches of it are
    still on their way sends none of their changelog records and writes none of them to its DB:
    another replica may own the partition by then, and a record of ours landing after its
    records, or a DB claiming an offset past them, would undo its changes on a later restore."""
    settings = replace(settings, state_dir=tmp_path, partitions=1)
    ensure_topics(settings)
    real_delivered, real_turn = Outputs.delivered, Processor.turn
    hold, lose, lost = threading.Event(), threading.Event(), threading.Event()

    def held(outputs: Outputs, keep: int) -> list[Any]:  # the broker acknowledges nothing
        return [] if hold.is_set() and keep > 0 else real_delivered(outputs, keep)

    def turn(processor: Processor) -> None:
        real_turn(processor)
        if lose.is_set() and not lost.is_set():  # as librdkafka calls back from a poll
            assert processor.consumer is not None
            processor._on_lost(processor.consumer, [TopicPartition(settings.calls_topic, 0)])
            lost.set()

    monkeypatch.setattr(Outputs, "delivered", held)
    monkeypatch.setattr(Processor, "turn", turn)
    processor = Processor(settings)
    running = Running(processor)
    try:
        deadline = time.monotonic() + 60
        running.wait_ready(deadline)
        hold.set()
        client = cf.Client(settings)
        pending = cf.submit("tests:notify", [1], {}, delay=3600, client=client)
        assert client.flush(30) == 0
        client.close()
        while not any(batch.changelog for batch in list(processor.outputs.batches)):
            assert time.monotonic() < deadline, "the call's batch was never staged"
            time.sleep(0.01)
        lose.set()
        assert lost.wait(30)
        assert 0 not in processor.tasks
    finally:
        running.stop()
    consumer = Consumer(consumer_config(settings, None))
    try:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(settings.changelog_topic, 0), timeout=30)
    finally:
        consumer.close()
    assert high == low, "a changelog record of the lost partition went out"
    path = tmp_path / settings.calls_topic / "0.db"  # (the stopped replica holds the dir's lock)
    db = rocksdict.Rdict(str(path), rocksdict.Options(raw_mode=True),
                         access_type=rocksdict.AccessType.read_only())
    try:
        assert db.get(state.slot_key(pending.id.encode())) is None
        assert changelog_offset(db) is None
    finally:
        db.close()
