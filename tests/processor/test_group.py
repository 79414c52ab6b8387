"""The processors' group as a replica reads it (cfstream.processor.group), on stand-ins for
the admin client and the standby copies."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from cfstream.kafka.groups import Group, Member
from cfstream.observability.metrics import ProcessorMetrics
from cfstream.processor.group import GroupView, Snapshot, StandbyPlan, standbys_of
from cfstream.settings import Settings

SETTINGS = Settings(topic_prefix="g", partitions=4)
TOPIC = SETTINGS.calls_topic


def description(state: str, held: dict[str, set[int]]) -> Group:
    return Group(state, tuple(Member(m, m.split("-")[0], tuple((TOPIC, p) for p in sorted(ps)))
                              for m, ps in held.items()))


class Admin:
    """A group reader (cfstream.kafka.groups.Groups) answering with futures the test
    resolves."""

    def __init__(self) -> None:
        self.asked: list[Future] = []

    def describe(self, group: str, timeout: float) -> Future:
        future: Future = Future()
        self.asked.append(future)
        return future


class Copies:
    def __init__(self) -> None:
        self.wanted: frozenset[int] = frozenset()

    def want(self, partitions: Any, warm: bool = False) -> None:
        self.wanted = frozenset(partitions)


HELD = {"a-1": {0, 1}, "b-1": {2, 3}}


def test_a_stable_snapshot_is_used_and_one_mid_rebalance_is_asked_again() -> None:
    admin = Admin()
    view = GroupView(SETTINGS, admin, admin)  # type: ignore[arg-type]
    assert view.poll() is None and len(admin.asked) == 1
    admin.asked[0].set_result(description("PREPARING_REBALANCING", HELD))
    assert view.poll() is None  # not settled: not used
    view.refresh_soon()
    assert view.poll() is None and len(admin.asked) == 2
    admin.asked[1].set_result(description("STABLE", HELD))
    snapshot = view.poll()
    assert snapshot is not None and snapshot.assignment == {"a-1": {0, 1}, "b-1": {2, 3}}
    assert snapshot.instances == {"a-1": "a", "b-1": "b"}


def test_a_read_asked_before_a_rebalance_is_dropped() -> None:
    admin = Admin()
    view = GroupView(SETTINGS, admin, admin)  # type: ignore[arg-type]
    view.poll()
    view.refresh_soon()  # a rebalance while the read is in flight
    admin.asked[0].set_result(description("STABLE", HELD))
    assert view.poll() is None
    assert view.poll() is None and len(admin.asked) == 2  # asked again at once


def test_two_replicas_copy_each_other_and_settle_once_the_group_lists_them() -> None:
    snapshot = Snapshot({m: frozenset(ps) for m, ps in HELD.items()}, {})
    assert standbys_of(snapshot, "a-1", 1) == {2, 3}
    assert standbys_of(snapshot, "a-1", 0) == set()
    assert standbys_of(snapshot, "c-1", 1) == set()  # not a member (yet)

    admin, copies = Admin(), Copies()
    plan = StandbyPlan(SETTINGS, GroupView(SETTINGS, admin, admin), copies,  # type: ignore[arg-type]
                       ProcessorMetrics())
    plan.rebalanced({0, 1})
    assert not plan.settled
    plan.turn("a-1", {0, 1})
    admin.asked[-1].set_result(description("STABLE", HELD))
    plan.turn("a-1", {0, 1})
    assert plan.settled and copies.wanted == {2, 3}
    # b-1 went; a-1 was given its partitions, owns them now, and copies nothing.
    plan.rebalanced({0, 1, 2, 3})
    assert not plan.settled and copies.wanted == frozenset()
    plan.turn("a-1", {0, 1, 2, 3})
    admin.asked[-1].set_result(description("STABLE", {"a-1": {0, 1, 2, 3}}))
    plan.turn("a-1", {0, 1, 2, 3})
    assert plan.settled and copies.wanted == frozenset()


def test_without_a_group_view_a_replica_is_settled_and_copies_nothing() -> None:
    copies = Copies()
    plan = StandbyPlan(SETTINGS, None, copies, ProcessorMetrics())  # type: ignore[arg-type]
    plan.rebalanced({0})
    plan.turn("a-1", {0})
    assert plan.settled and copies.wanted == frozenset()


def test_between_the_two_rounds_of_a_join_the_newcomer_is_not_settled() -> None:
    """After the first round of a cooperative join the group is stable with the newcomer holding
    nothing: a rollout must not take it as ready then."""
    admin, copies = Admin(), Copies()
    plan = StandbyPlan(SETTINGS, GroupView(SETTINGS, admin, admin),  # type: ignore[arg-type]
                       copies, ProcessorMetrics())  # type: ignore[arg-type]
    plan.rebalanced(set())
    plan.turn("c-1", set())
    admin.asked[-1].set_result(description("STABLE", {**HELD, "c-1": set()}))
    plan.turn("c-1", set())
    assert not plan.settled
    # The copies it warmed up stay while partitions are in flight (revoked, not yet given).
    plan.copies = {0, 3}
    assert plan.group is not None
    plan.group.refresh_soon()  # instead of waiting RETRY_SETTLED
    plan.turn("c-1", set())
    admin.asked[-1].set_result(description("STABLE", {"a-1": {1}, "b-1": {2, 3}, "c-1": set()}))
    plan.turn("c-1", set())
    assert not plan.settled and plan.copies == {0, 3}
    plan.rebalanced({3})
    plan.turn("c-1", {3})
    admin.asked[-1].set_result(description("STABLE", {"a-1": {0, 1}, "b-1": {2}, "c-1": {3}}))
    plan.turn("c-1", {3})
    assert plan.settled
