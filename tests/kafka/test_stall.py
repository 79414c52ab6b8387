"""Telling a stalled reader from one with nothing to read (cfstream.kafka.stall), on a stand-in
consumer that only answers for partitions' ends."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from cfstream.kafka import stall
from cfstream.kafka.stall import Stall


class Ends:
    """Partition -> (low, high); None: the broker is away."""

    def __init__(self, ends: dict[int, tuple[int, int]] | None) -> None:
        self.ends = ends

    def get_watermark_offsets(self, tp: TopicPartition, **_: Any) -> tuple[int, int]:
        if self.ends is None:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        return self.ends[tp.partition]


def broker(ends: dict[int, tuple[int, int]] | None) -> Any:
    return Ends(ends)


def waited(watch: Stall) -> Stall:
    """As if the reader had read nothing for the whole wait."""
    watch.last_read -= watch.wait + 1
    return watch


def test_a_partition_left_behind_for_two_looks_is_a_stall() -> None:
    watch, ends = Stall("t"), broker({0: (0, 10), 1: (0, 5)})
    assert not watch.replace(ends, {0: 10, 1: 3})  # not a whole wait yet: not asked
    assert not waited(watch).replace(ends, {0: 10, 1: 3})  # past 3: maybe on their way
    assert not watch.replace(ends, {0: 10, 1: 3})  # not a whole wait later: not asked again
    assert waited(watch).replace(ends, {0: 10, 1: 3})
    assert watch.wait == 2 * stall.STALL_S  # the next consumer gets longer


def test_a_reader_that_moved_or_read_is_not_stalled() -> None:
    watch, ends = Stall("t"), broker({0: (0, 10)})
    assert not waited(watch).replace(ends, {0: 3})
    assert not waited(watch).replace(ends, {0: 7})  # it moved on since the last look
    watch.read()
    assert not waited(watch).replace(ends, {0: 7})  # records came: a first look again
    watch.began()
    assert not waited(watch).replace(ends, {0: 7})  # new partitions or consumer: the same


def test_nothing_to_read_or_no_broker_is_no_stall() -> None:
    watch = Stall("t")
    for _ in range(3):
        assert not waited(watch).replace(broker({0: (0, 10)}), {0: 10})
        assert not waited(watch).replace(broker({0: (4, 4)}), {0: -2})  # OFFSET_BEGINNING, empty
        assert not waited(watch).replace(broker(None), {0: 3})
    assert watch.wait == stall.STALL_S


def test_the_wait_doubles_up_to_its_bound() -> None:
    watch, ends = Stall("t"), broker({0: (0, 10)})
    waits = []
    for _ in range(6):
        waited(watch).replace(ends, {0: 3})
        assert waited(watch).replace(ends, {0: 3})
        waits.append(watch.wait)
    assert waits == [20.0, 40.0, 80.0, 120.0, 120.0, 120.0]
