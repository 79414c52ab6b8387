"""The processors' group as this replica reads it, and the standby copies that follow from it.

The group's assignment is read with ``describe_consumer_groups`` (in a child process:
:mod:`cfstream.kafka.groups`) after every rebalance and every REFRESH_INTERVAL, without blocking
the loop (the answer is picked up by a later turn). From a
stable group's snapshot :func:`cfstream.processor.placement.standbys` names, for every
partition, the replicas that would take it over; every replica computes the same map from the
same snapshot, and keeps copies of the partitions the map gives it. A snapshot taken mid
rebalance is not used: the next one is asked for sooner.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from cfstream.kafka import config as kafka_config
from cfstream.kafka.groups import Group, GroupReadError, Groups
from cfstream.observability.metrics import ProcessorMetrics
from cfstream.processor import placement
from cfstream.processor.standby import Standbys
from cfstream.settings import Settings

logger = logging.getLogger(__name__)

# Where groups live: before anything joined a group on the cluster, the topic does not exist,
# and describing a group then fails slowly (librdkafka waits for a coordinator).
OFFSETS_TOPIC = "__consumer_offsets"
REFRESH_INTERVAL = 10.0
# After a rebalance, how soon the group is read again until it lists this replica as it is.
RETRY_SETTLED = 0.5
# A snapshot taken while the group rebalanced, or a failed read: look again this soon.
RETRY_INTERVAL = 1.0
DESCRIBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Snapshot:
    """Who owns which partitions of the calls topic."""

    assignment: Mapping[str, frozenset[int]]  # member id -> partitions
    instances: Mapping[str, str | None]  # member id -> group.instance.id
    stable: bool = True  # False: taken mid rebalance, the assignment is not settled


class GroupView:
    def __init__(self, settings: Settings, groups: Groups | None = None,
                 admin: AdminClient | None = None) -> None:
        self.settings = settings
        self.group = settings.processor_group
        self.topic = settings.calls_topic
        self.groups = groups or Groups(settings)
        self.admin = admin or AdminClient(kafka_config.admin_config(settings))
        self.latest: Snapshot | None = None
        self._future: Future[Group] | None = None
        self._stale = False  # the read in flight was asked before the latest rebalance
        self._next = 0.0  # monotonic time of the next read

    def refresh_soon(self, after: float = 0.0) -> None:
        """Read the group again ``after`` seconds from now at the latest; after a rebalance
        (``after`` 0) a read already in flight is not used."""
        self._next = min(self._next, time.monotonic() + after)
        if after == 0.0 and self._future is not None:
            self._stale = True

    def poll(self) -> Snapshot | None:
        """A new stable snapshot if one arrived since the last call; asks for the next one when
        it is time. Never blocks."""
        now = time.monotonic()
        future = self._future
        if future is None:
            if now >= self._next:
                self._future = self.groups.describe(self.group, DESCRIBE_TIMEOUT)
            return None
        if not future.done():
            return None
        self._future = None
        if self._stale:
            self._stale = False
            return None
        snapshot = self._read(future)
        if snapshot is None or not snapshot.stable:
            self._next = now + RETRY_INTERVAL
            return None
        self._next = now + REFRESH_INTERVAL
        self.latest = snapshot
        return snapshot

    def read(self) -> Snapshot | None:
        """The group now (blocking): empty if it has no members, None if it could not be
        read."""
        try:
            topics = self.admin.list_topics(timeout=DESCRIBE_TIMEOUT).topics
        except KafkaException as exc:
            logger.info("could not read the cluster's topics: %s", exc)
            return None
        if OFFSETS_TOPIC not in topics:
            return Snapshot({}, {})
        return self._read(self.groups.describe(self.group, DESCRIBE_TIMEOUT))

    def close(self) -> None:
        self.groups.close()

    def _read(self, future: Future[Group]) -> Snapshot | None:
        try:
            description = future.result()
        except GroupReadError as exc:
            if exc.code == KafkaError.GROUP_ID_NOT_FOUND:
                return Snapshot({}, {})
            logger.info("could not describe group %s: %s", self.group, exc)
            return None
        if description.state in ("EMPTY", "DEAD"):
            return Snapshot({}, {})
        assignment, instances = {}, {}
        for member in description.members:
            assignment[member.member_id] = frozenset(
                p for topic, p in member.partitions if topic == self.topic)
            instances[member.member_id] = member.instance_id
        return Snapshot(assignment, instances, description.state == "STABLE")


def balanced(snapshot: Snapshot) -> bool:
    """Whether no member holds two partitions more than another: how cooperative-sticky leaves
    a group of identical subscriptions once a rebalance is over. Between its two rounds the
    group is stable too, with a newcomer holding nothing while the others still hold its
    share."""
    counts = [len(partitions) for partitions in snapshot.assignment.values()]
    return not counts or max(counts) - min(counts) <= 1


def standbys_of(snapshot: Snapshot, member_id: str, replicas: int) -> set[int]:
    """The partitions ``member_id`` keeps standby copies of, ``replicas`` copies a partition."""
    if member_id not in snapshot.assignment or replicas <= 0:
        return set()
    return {partition
            for partition, members in placement.standbys(snapshot.assignment, replicas).items()
            if member_id in members}


class StandbyPlan:
    """What the loop knows of the group: the copies this replica keeps, and whether the group
    has settled on what it holds. Driven from the loop's thread."""

    def __init__(self, settings: Settings, group: GroupView | None, standbys: Standbys,
                 metrics: ProcessorMetrics, copies: set[int] | None = None) -> None:
        self.settings = settings
        self.group = group  # None: no placement (KIP-848, or neither copies nor warm-up)
        self.standbys = standbys
        self.metrics = metrics
        self.copies: set[int] = copies or set()  # partitions to copy, owned here or not
        # The group's latest stable snapshot lists this replica with what it holds (False after
        # each rebalance until then): a cooperative rebalance assigns in two rounds, and a
        # rollout must not stop the next replica between them.
        self.settled = group is None

    def rebalanced(self, owned: set[int]) -> None:
        """Partitions came or went: copy none of the owned ones, and read the group again."""
        self.want(owned)
        if self.group is not None:
            self.group.refresh_soon()
            self.settled = False

    def turn(self, member: str, owned: set[int]) -> None:
        """Take a new snapshot of the group if one arrived (never blocks)."""
        group = self.group
        snapshot = group.poll() if group is not None else None
        if group is None or snapshot is None:
            return
        if not balanced(snapshot):  # mid rebalance: partitions in flight, keep the copies
            self.settled = False
            group.refresh_soon(RETRY_SETTLED)
            return
        self.settled = snapshot.assignment.get(member) == frozenset(owned)
        if not self.settled:
            group.refresh_soon(RETRY_SETTLED)
        copies = standbys_of(snapshot, member, self.settings.standby_replicas)
        if copies != self.copies:
            logger.info("standby copies of %s[%s]", self.settings.calls_topic,
                        ",".join(map(str, sorted(copies))) or "none")
        self.copies = copies
        self.want(owned)

    def want(self, owned: set[int]) -> None:
        self.standbys.want(self.copies - owned)
        self.metrics.standby_partitions.set(len(self.standbys.wanted))
