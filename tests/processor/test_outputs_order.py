"""The order a batch takes to the broker (cfstream.processor.outputs), on producers that hold
their records until the test releases them: its executions and events first, then its
changelog records, and nothing of a partition another replica took."""

from __future__ import annotations

from typing import Any

import pytest

from cfstream.processor import outputs as outputs_module
from cfstream.processor.outputs import Outputs
from cfstream.settings import Settings


class Sent:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


class HeldProducer:
    """A producer whose records stay on their way until :meth:`release`."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.held: list[tuple[str, bytes | None, bytes | None, int]] = []
        self.offsets: dict[tuple[str, int], int] = {}

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                partition: int = -1, headers: Any = None) -> None:
        self.held.append((topic, key, value, partition))

    def __len__(self) -> int:
        return len(self.held)

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        self.release()
        return 0

    def release(self) -> None:
        report = not self.config.get("delivery.report.only.error")
        for topic, _, _, partition in self.held:
            offset = self.offsets[topic, partition] = self.offsets.get((topic, partition), -1) + 1
            if report:
                self.config["on_delivery"](None, Sent(topic, partition, offset))
        self.held = []


@pytest.fixture
def outputs(monkeypatch: pytest.MonkeyPatch) -> Outputs:
    monkeypatch.setattr(outputs_module, "Producer", HeldProducer)
    return Outputs(Settings(topic_prefix="unit"), "changelog")


def held(producer: Any) -> list[bytes | None]:
    return [key for _, key, _, _ in producer.held]


def test_the_changelog_waits_for_the_batch_s_events_then_for_its_own_delivery(
        outputs: Outputs) -> None:
    first = outputs.producer
    outputs.produce("events", b"e1", b"{}", 0)
    outputs.produce("changelog", b"s:k", b"slot", 0)
    outputs.end_batch()
    assert outputs.delivered(keep=1) == [] and held(outputs.changelog) == []
    first.release()  # type: ignore[attr-defined]
    assert outputs.delivered(keep=1) == [] and held(outputs.changelog) == [b"s:k"]
    outputs.changelog.release()  # type: ignore[attr-defined]
    assert outputs.delivered(keep=1) == [{0: 0}]


def test_records_go_to_the_other_producer_while_one_drains(outputs: Outputs) -> None:
    first = outputs.producer
    outputs.produce("events", b"e1", b"{}", 0)
    outputs.end_batch()
    outputs.delivered(keep=2)
    second = outputs.producer
    assert second is not first
    outputs.produce("events", b"e2", b"{}", 0)
    outputs.produce("changelog", b"s:k", b"slot", 0)
    outputs.end_batch()
    second.release()  # type: ignore[attr-defined]
    # The second batch's events are on the broker, but the first batch's are not: nothing of
    # the second goes out before the first.
    assert outputs.delivered(keep=2) == [] and held(outputs.changelog) == []
    first.release()  # type: ignore[attr-defined]
    # Both are ready: their changelog records go in one send, which carries the offsets.
    assert outputs.delivered(keep=2) == [] and held(outputs.changelog) == [b"s:k"]
    outputs.changelog.release()  # type: ignore[attr-defined]
    assert outputs.delivered(keep=2) == [None, {0: 0}]


def test_keep_waits_for_the_oldest_batches(outputs: Outputs) -> None:
    for n in range(3):
        outputs.produce("events", f"e{n}".encode(), b"{}", 0)
        outputs.produce("changelog", f"s:{n}".encode(), b"slot", 0)
        outputs.end_batch()
    assert len(outputs.delivered(keep=0)) == 3 and outputs.batches == type(outputs.batches)()


def test_a_partition_taken_by_another_replica_gets_no_more_changelog_records(
        outputs: Outputs) -> None:
    outputs.produce("changelog", b"s:a", b"slot", 0)
    outputs.produce("changelog", b"s:b", b"slot", 1)
    outputs.end_batch()
    outputs.produce("changelog", b"s:c", b"slot", 1)
    outputs.forget({1})
    outputs.end_batch()
    assert outputs.delivered(keep=0) == [None, {0: 0}]
    assert outputs.changelog.offsets == {("changelog", 0): 0}  # type: ignore[attr-defined]
