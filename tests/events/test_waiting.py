"""The process's events reader (cfstream.events.waiting) on the real broker: it reads only the
partitions the waited-on ids map to, finds events read before a wait began, resolves many
asyncio waits at once, and lets go of partitions no one waits on."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from events_harness import PARTITIONS, Append, eventually, ids_in, in_thread

from cfstream.codec import dumps
from cfstream.dev.broker import LocalBroker
from cfstream.errors import CfStreamError
from cfstream.events import reading
from cfstream.events.waiting import Waiters
from cfstream.ids import new_execution_id
from cfstream.kafka import stall
from cfstream.kafka.partitioner import murmur2, partition_for
from cfstream.kafka.topics import ensure_topics
from cfstream.settings import Settings


def test_murmur2_is_kafkas() -> None:
    """Kafka's own test vectors (UtilsTest.testMurmur2), as signed 32-bit integers."""
    cases = {b"21": -973932308, b"foobar": -790332482,
             b"a-little-bit-long-string": -985981536,
             b"a-little-bit-longer-string": -1486304829,
             b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, b"abc": 479470107}
    for data, expected in cases.items():
        assert murmur2(data) == expected & 0xFFFFFFFF, data




@pytest.fixture
def waiters(events_settings: Settings) -> Iterator[Waiters]:
    reader = Waiters(events_settings)
    yield reader
    reader.close()


@pytest.mark.kafka
def test_partition_for_is_where_the_producer_puts_keys(events_settings: Settings) -> None:
    producer = Producer({"bootstrap.servers": events_settings.bootstrap_servers,
                         "partitioner": "murmur2_random"})
    placed: dict[str, int] = {}

    def delivered(err: object, msg: object) -> None:
        assert err is None
        placed[msg.key().decode()] = msg.partition()  # type: ignore[attr-defined]

    keys = [new_execution_id() for _ in range(200)]
    for key in keys:
        producer.produce(events_settings.events_topic, b"{}", key.encode(), on_delivery=delivered)
    assert producer.flush(30) == 0
    assert placed == {key: partition_for(key.encode(), PARTITIONS) for key in keys}
    assert len(set(placed.values())) == PARTITIONS


@pytest.mark.kafka
def test_a_wait_reads_only_its_ids_partition_and_lets_it_go(waiters: Waiters,
                                                            append: Append) -> None:
    execution_id = new_execution_id()
    partition = partition_for(execution_id.encode(), PARTITIONS)
    thread, box = in_thread(lambda: waiters.wait(execution_id, 30))
    eventually(lambda: waiters.waiting() == {partition: 1})
    append("scheduled", execution_id)
    append("succeeded", execution_id, result=42)
    thread.join(30)
    assert box and box[0]["type"] == "succeeded" and box[0]["result"] == 42  # type: ignore[index]
    eventually(lambda: waiters.waiting() == {}, timeout=reading.LINGER_S + 10)
    # The outcome stays known: a second wait returns at once, and so does status.
    assert waiters.wait(execution_id, 0) == box[0]
    assert waiters.latest(execution_id, 10) == box[0]


@pytest.mark.kafka
def test_a_successor_whose_outcome_was_read_before_its_wait(waiters: Waiters,
                                                            append: Append) -> None:
    partition = 2
    successor, keeper = ids_in(partition, 2)
    kept, _ = in_thread(lambda: waiters.wait(keeper, 60))
    eventually(lambda: waiters.waiting() == {partition: 1})
    first = new_execution_id()
    append("succeeded", successor, result="latest")
    append("succeeded", keeper)  # after the successor's event, in the same partition
    kept.join(30)
    assert not kept.is_alive()  # the reader is past the successor's outcome, unparsed
    append("deferred", first, successor=successor)
    deferred = waiters.wait(first, 30)
    assert deferred is not None and deferred["successor"] == successor
    began = time.monotonic()
    outcome = waiters.wait(successor, 30, after_ms=deferred["ts_ms"])
    assert outcome is not None and outcome["result"] == "latest"
    assert time.monotonic() - began < 5


@pytest.mark.kafka
def test_an_execution_from_before_the_reader_existed(events_settings: Settings,
                                                     append: Append) -> None:
    old = new_execution_id(int(time.time() * 1000) - 30_000)  # submitted elsewhere, earlier
    append("started", old)
    append("failed", old, error={"type": "ValueError", "message": "no"})
    reader = Waiters(events_settings)
    try:
        assert reader.latest(old, 30)["type"] == "failed"  # type: ignore[index]
        assert reader.wait(old, 30)["error"]["type"] == "ValueError"  # type: ignore[index]
    finally:
        reader.close()


@pytest.mark.kafka
def test_many_asyncio_waits_and_a_cancelled_one(waiters: Waiters, append: Append) -> None:
    ids = [new_execution_id() for _ in range(2000)]
    abandoned = new_execution_id()

    async def main() -> None:
        tasks = [asyncio.ensure_future(waiters.wait_async(i, 60)) for i in ids]
        gone = asyncio.ensure_future(waiters.wait_async(abandoned, 60))
        while sum(waiters.waiting().values()) < len(ids) + 1:
            await asyncio.sleep(0.02)
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        writer = threading.Thread(target=lambda: [append("succeeded", i, result=i) for i in ids])
        writer.start()
        results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
        writer.join()
        assert [r["result"] for r in results] == ids  # type: ignore[index]

    asyncio.run(main())
    eventually(lambda: sum(waiters.waiting().values()) == 0)  # the cancelled wait let go too
    eventually(lambda: waiters.waiting() == {}, timeout=reading.LINGER_S + 10)


@pytest.mark.kafka
def test_an_undelivered_call_ends_the_wait_and_a_timeout_returns_none(
        waiters: Waiters) -> None:
    execution_id = new_execution_id()
    assert waiters.wait(execution_id, 0.2) is None
    thread, box = in_thread(lambda: waiters.wait(execution_id, 30))
    eventually(lambda: sum(waiters.waiting().values()) == 1)
    waiters.fail(execution_id, "broker said no")
    thread.join(10)
    assert box == [{"type": "undelivered", "id": execution_id, "reason": "broker said no"}]
    assert waiters.wait(execution_id, 0)["type"] == "undelivered"  # type: ignore[index]


class NeverFetches(Consumer):
    """A tail assigned like any other that never returns a record (librdkafka#5153: seen after
    a broker restart)."""

    def poll(self, *args: Any, **kwargs: Any) -> None:
        time.sleep(0.01)

    def consume(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []


@pytest.mark.kafka
def test_a_wait_ends_though_the_tail_stopped_fetching(events_settings: Settings, append: Append,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stall, "STALL_S", 1.0)
    made: list[Consumer] = []

    def new_consumer(config: dict[str, Any]) -> Consumer:  # the reader's first is its tail
        made.append((NeverFetches if not made else Consumer)(config))
        return made[-1]

    monkeypatch.setattr(reading, "Consumer", new_consumer)
    waiters = Waiters(events_settings)
    try:
        execution_id = new_execution_id()
        thread, box = in_thread(lambda: waiters.wait(execution_id, 60))
        eventually(lambda: sum(waiters.waiting().values()) == 1)
        append("succeeded", execution_id, result=42)
        thread.join(60)
        assert box and box[0]["result"] == 42  # type: ignore[index]
        assert type(made[0]) is NeverFetches and len(made) >= 6  # read by a new set
    finally:
        waiters.close()


@pytest.mark.kafka
def test_waits_go_on_across_a_broker_restart(tmp_path: Path) -> None:
    with LocalBroker(data_dir=tmp_path / "kafka") as broker:
        settings = Settings(bootstrap_servers=broker.bootstrap_servers, topic_prefix="restart",
                            partitions=PARTITIONS, kafka_config={"log_level": 2})
        ensure_topics(settings)
        reader = Waiters(settings)
        try:
            before, after = new_execution_id(), new_execution_id()
            waits = [in_thread(lambda i=i: reader.wait(i, 120)) for i in (before, after)]
            eventually(lambda: sum(reader.waiting().values()) == 2)
            broker.stop(remove_data=False)
            broker.start()
            producer = Producer({"bootstrap.servers": broker.bootstrap_servers,
                                 "partitioner": "murmur2_random"})
            for execution_id in (before, after):
                event = {"v": 1, "type": "succeeded", "id": execution_id,
                         "ts_ms": int(time.time() * 1000), "result": execution_id}
                producer.produce(settings.events_topic, dumps(event), execution_id.encode())
            assert producer.flush(60) == 0
            for thread, box in waits:
                thread.join(90)
                assert box and box[0] is not None and box[0]["type"] == "succeeded"  # type: ignore[index]
        finally:
            reader.close()


@pytest.mark.kafka
def test_an_old_id_on_a_partition_already_read_goes_back_to_its_time(
        waiters: Waiters, events_settings: Settings) -> None:
    partition = 1
    keeper = ids_in(partition, 1)[0]
    now = int(time.time() * 1000)
    old = new_execution_id(now - 300_000)
    while partition_for(old.encode(), PARTITIONS) != partition:
        old = new_execution_id(now - 300_000)
    producer = Producer({"bootstrap.servers": events_settings.bootstrap_servers,
                         "partitioner": "murmur2_random"})
    event = {"v": 1, "type": "succeeded", "id": old, "ts_ms": now - 299_000, "result": "old"}
    producer.produce(events_settings.events_topic, dumps(event), old.encode(),
                     timestamp=now - 299_000)
    assert producer.flush(30) == 0
    kept, _ = in_thread(lambda: waiters.wait(keeper, 60))
    eventually(lambda: waiters.waiting() == {partition: 1})  # read from the keeper's time on

    found = waiters.wait(old, 30)

    assert found is not None and found["result"] == "old"
    waiters.fail(keeper, "done")
    kept.join(10)


@pytest.mark.kafka
def test_close_ends_the_waits_still_open(events_settings: Settings) -> None:
    reader = Waiters(events_settings)
    execution_id = new_execution_id()
    errors: list[Exception] = []

    def wait() -> None:
        try:
            reader.wait(execution_id, None)
        except CfStreamError as error:
            errors.append(error)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    eventually(lambda: sum(reader.waiting().values()) == 1)
    reader.close()
    thread.join(10)
    assert not thread.is_alive() and "closed" in str(errors[0])


@pytest.mark.kafka
def test_an_event_that_is_not_ours_ends_no_wait_and_stops_nothing(waiters: Waiters,
                                                                  append: Append) -> None:
    broken, fine = ids_in(3, 2)
    thread, box = in_thread(lambda: waiters.wait(broken, 3))
    eventually(lambda: waiters.waiting() == {3: 1})
    append("deferred", broken)  # names no successor
    append("succeeded", fine, result="fine")
    assert waiters.wait(fine, 30)["result"] == "fine"  # type: ignore[index]
    thread.join(10)
    assert box == [None]  # timed out: nothing to follow
