"""How a processor replica joins its group and leaves it (cfstream.processor.membership), on
stand-ins for the consumer and the admin client; tests/pipeline/test_static_membership.py runs the
same on the real broker."""

from __future__ import annotations

import time
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from cfstream.errors import ReplicaFenced
from cfstream.processor import membership
from cfstream.processor.loop import Processor
from cfstream.settings import Settings

KIP848 = {"group.protocol": "consumer"}


def test_an_instance_id_makes_a_static_member_of_the_classic_group() -> None:
    config = membership.group_config(Settings(instance_id="processor-0"))
    assert config["group.instance.id"] == "processor-0"
    assert config["partition.assignment.strategy"] == "cooperative-sticky"
    assert config["session.timeout.ms"] == membership.SESSION_TIMEOUT_MS
    assert "group.instance.id" not in membership.group_config(Settings())


def test_the_session_timeout_can_be_set_through_kafka_config() -> None:
    settings = Settings(instance_id="p", kafka_config={"session.timeout.ms": 10_000})
    assert membership.group_config(settings)["session.timeout.ms"] == 10_000


def test_under_kip848_the_instance_id_stays_and_the_classic_options_go() -> None:
    config = membership.group_config(Settings(instance_id="p", kafka_config=KIP848))
    assert config["group.instance.id"] == "p"
    assert config["group.protocol"] == "consumer"
    assert not {"session.timeout.ms", "partition.assignment.strategy"} & config.keys()


@pytest.mark.parametrize(("instance_id", "leave_on_stop", "kafka_config", "leaves"), [
    (None, True, {}, False),  # a dynamic member leaves on close() by itself
    ("p", True, {}, True),
    ("p", False, {}, False),  # stays for a restart within the session
    ("p", True, KIP848, False),  # librdkafka cannot leave a static member for good there
])
def test_who_leaves_on_stop(instance_id: str | None, leave_on_stop: bool,
                            kafka_config: dict[str, Any], leaves: bool) -> None:
    settings = Settings(instance_id=instance_id, leave_on_stop=leave_on_stop,
                        kafka_config=kafka_config)
    assert membership.leaves_on_stop(settings) is leaves


class Member:
    """A consumer stand-in whose revoke is served by its ``revoke_after``-th poll."""

    def __init__(self, revoke_after: int) -> None:
        self.calls: list[str] = []
        self.assigned = [TopicPartition("t", 0), TopicPartition("t", 1)]
        self.revoke_after = revoke_after
        self.member = "p-0-5e1f"

    def memberid(self) -> str:
        return self.member

    def unsubscribe(self) -> None:
        self.calls.append("unsubscribe")
        self.member = ""  # as librdkafka does once it has left

    def assignment(self) -> list[TopicPartition]:
        return self.assigned

    def poll(self, timeout: float) -> None:
        self.calls.append("poll")
        time.sleep(timeout)  # nothing to deliver: a real poll waits its timeout out
        if self.calls.count("poll") >= self.revoke_after:
            self.assigned = []


class Group:
    """A group reader (cfstream.kafka.groups.Groups) stand-in listing ``member`` for the first
    ``listed`` descriptions."""

    def __init__(self, member: str, listed: int) -> None:
        self.member, self.listed, self.asked = member, listed, 0

    def describe(self, group: str, timeout: float) -> Future[Any]:
        self.asked += 1
        members = [SimpleNamespace(member_id=self.member)] if self.asked <= self.listed else []
        future: Future[Any] = Future()
        future.set_result(SimpleNamespace(members=members))
        return future

    def close(self) -> None:
        pass


def test_leave_unsubscribes_serves_the_revoke_then_waits_for_the_group() -> None:
    consumer, group = Member(revoke_after=3), Group("p-0-5e1f", listed=2)
    membership.leave(consumer, Settings(instance_id="p-0"), group)  # type: ignore[arg-type]
    assert consumer.calls[:4] == ["unsubscribe", "poll", "poll", "poll"]
    assert consumer.assignment() == []
    assert group.asked == 3  # until the member was gone


def test_leave_gives_up_on_the_group_after_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(membership, "LEAVE_CONFIRM_TIMEOUT", 0.2)
    consumer, group = Member(revoke_after=1), Group("p-0-5e1f", listed=10**6)
    membership.leave(consumer, Settings(instance_id="p-0"), group)  # type: ignore[arg-type]
    assert 1 < group.asked <= 0.2 / membership.LEAVE_POLL + 1


class Failed:
    def __init__(self, error: KafkaError) -> None:
        self._error = error

    def error(self) -> KafkaError:
        return self._error


FENCE = KafkaError(KafkaError._FATAL, "Fatal error: Broker: Static consumer fenced by other "
                   "consumer with same group.instance.id")


def test_a_fence_on_a_record_stops_the_turn_committing_nothing() -> None:
    processor = Processor(Settings(instance_id="p-0"))
    with pytest.raises(KafkaException) as raised:
        processor._readable(Failed(FENCE))  # type: ignore[arg-type]
    assert membership.fence_of(raised.value) is FENCE
    assert not processor.healthy and processor.dead


def test_a_fence_from_any_consumer_call_is_told_from_other_errors() -> None:
    assert membership.fence_of(KafkaException(FENCE)) is FENCE  # on a polled record
    # What confluent-kafka raises from a call made after the fence (committed() in an
    # assignment callback, say): librdkafka's bare _FATAL, or the broker's code, not fatal.
    after = KafkaError(KafkaError._FATAL, "Failed to get committed offsets: Local: Fatal error")
    assert membership.fence_of(KafkaException(after)) is after
    fenced = KafkaError(KafkaError.FENCED_INSTANCE_ID, "Broker: Static consumer fenced")
    assert membership.fence_of(KafkaException(fenced)) is fenced
    for other in (KafkaError(KafkaError._TRANSPORT, "Local: Broker transport failure"),
                  KafkaError(KafkaError.REBALANCE_IN_PROGRESS, "rebalancing"),
                  "no error object"):
        assert membership.fence_of(KafkaException(other)) is None


def test_a_fenced_replica_joins_again_and_stops_at_a_second_fence(
        monkeypatch: pytest.MonkeyPatch) -> None:
    processor = Processor(Settings(instance_id="p-0"))
    rejoined: list[str] = []
    monkeypatch.setattr(processor, "_rejoin", rejoined.append)
    processor._fenced(KafkaException(FENCE))
    assert len(rejoined) == 1 and "librdkafka#3437" in rejoined[0]
    with pytest.raises(ReplicaFenced, match="CFSTREAM_INSTANCE_ID=p-0"):
        processor._fenced(KafkaException(FENCE))  # within REJOIN_WINDOW: another process
    assert len(rejoined) == 1 and not processor.healthy and processor.dead


def test_a_fenced_replica_joins_again_once_a_window() -> None:
    now = [1000.0]
    fences = membership.Fences(clock=lambda: now[0])
    assert fences.may_rejoin()  # librdkafka#3437: its own rejoin fenced it
    now[0] += membership.REJOIN_WINDOW - 1
    assert not fences.may_rejoin()  # again so soon: another process has its id
    now[0] += 2
    assert fences.may_rejoin()


def test_a_replica_without_an_assignment_long_after_a_lost_session_joins_again() -> None:
    now = [1000.0]
    lost = membership.Lost(clock=lambda: now[0])
    assert not lost.overdue()
    lost.lost()
    now[0] += membership.REJOIN_AFTER_LOST - 1
    lost.lost()  # lost again: the wait still counts from the first
    assert not lost.overdue()
    now[0] += 1
    assert lost.overdue()
    lost.assigned()
    assert not lost.overdue()
