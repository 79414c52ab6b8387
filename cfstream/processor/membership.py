"""A processor replica in its consumer group: the options it joins with, and how it goes.

With CFSTREAM_INSTANCE_ID the replica is a static member (KIP-345, ``group.instance.id``): back
under the same id within the session timeout, it gets its partitions again without a rebalance
and runs on its own disk, restoring only its changelog's tail. librdkafka never sends a
LeaveGroup for a static member on close(), so a stop that hands over at once leaves first:

    dynamic (no id)         close(): revoke (commit, close each task), leave
    static, leave on stop   leave(): unsubscribe, serve the revoke, see the member gone; close()
    static, stay            close(): revoke; the group keeps the assignment for the session

A fence (FENCED_INSTANCE_ID, fatal in librdkafka) comes from a second process under the same
id, or from the replica's own rejoin after its session timed out on its side (heartbeats
unanswered that long: librdkafka rejoins under the same id, and the new member fences the old
one, librdkafka#3437). A loaded machine does the latter; the replica then drops its partitions
without committing and joins again with a new consumer, in place (:class:`Fences`). A second
fence within REJOIN_WINDOW means another process holds the id: the replica stops
(:class:`~cfstream.errors.ReplicaFenced`), and the other keeps the partitions. A replica whose
partitions were lost (its session expired: a broker restart, a stalled machine) and that gets no
assignment within REJOIN_AFTER_LOST joins again the same way: a static member's consumer can
hang there for good (librdkafka#3437; seen in the short chaos test, two replicas out of the
group for minutes after a broker restart).

Under KIP-848 (``group.protocol=consumer``) librdkafka leaves a static member with epoch -2, on
unsubscribe and close alike: the broker keeps its assignment until its session times out
(``group.consumer.session.timeout.ms``), whatever CFSTREAM_LEAVE_ON_STOP says.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException

from cfstream.errors import ReplicaFenced
from cfstream.kafka import config as kafka_config
from cfstream.kafka.groups import GroupReadError, Groups
from cfstream.settings import Settings

logger = logging.getLogger(__name__)

# A killed replica's partitions move after this long: the broker's smallest session by default
# (group.min.session.timeout.ms). Longer on a cluster slower to fence a lost broker
# (cfstream.kafka.sessions); CFSTREAM_KAFKA_CONFIG's session.timeout.ms wins.
SESSION_TIMEOUT_MS = 6_000
# Serving the revoke after unsubscribe() needs no broker, only polls and the commit.
REVOKE_TIMEOUT = 10.0
# How long a leaving replica waits to see the coordinator drop it; past this its partitions
# move when its session times out instead.
LEAVE_CONFIRM_TIMEOUT = 3.0
# Polls while leaving: short, so the leave goes out right after the revoke.
LEAVE_POLL = 0.05
# A replica fenced again this soon after it rejoined in place stops: another process has its id.
REJOIN_WINDOW = 600.0
# Seconds from lost partitions (an expired session) to joining again with a new consumer, if no
# assignment came meanwhile: a rejoin takes the session timeout and a rebalance, seconds.
REJOIN_AFTER_LOST = 30.0


class Lost:
    """Whether a replica whose partitions were lost has waited too long for an assignment."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.since: float | None = None  # when partitions were lost, with none assigned since

    def lost(self) -> None:
        if self.since is None:
            self.since = self.clock()

    def assigned(self) -> None:
        self.since = None

    def overdue(self) -> bool:
        return self.since is not None and self.clock() - self.since >= REJOIN_AFTER_LOST


def fence_of(exc: KafkaException) -> KafkaError | None:
    """The error, if ``exc`` says the consumer was fenced or is dead. librdkafka raises a fenced
    static member's FENCED_INSTANCE_ID as a fatal error on a polled record; a call made after
    it (``committed()`` in an assignment callback, say) fails with the bare ``_FATAL``, which
    names no cause. Either way the consumer is unusable, and the answer is the same: join again
    with a new one, or stop if that was done lately (:class:`Fences`)."""
    error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    if error is not None and (error.fatal() or error.code() in (
            KafkaError._FATAL, KafkaError.FENCED_INSTANCE_ID)):
        return error
    return None


class Fences:
    """Whether a fenced replica joins again in place: yes, unless it did so within
    REJOIN_WINDOW."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.rejoined: float | None = None

    def may_rejoin(self) -> bool:
        now = self.clock()
        if self.rejoined is not None and now - self.rejoined < REJOIN_WINDOW:
            return False
        self.rejoined = now
        return True

    def rejoin_or_stop(self, cause: KafkaException, instance_id: str | None) -> None:
        """Return if the fenced replica may join again; else raise :class:`ReplicaFenced`."""
        if not self.may_rejoin():
            raise ReplicaFenced(
                f"fenced as CFSTREAM_INSTANCE_ID={instance_id}, and again soon after joining "
                "again: most likely another process runs under this id (give each replica its "
                "own)") from cause


def group_config(settings: Settings, session_timeout_ms: int = SESSION_TIMEOUT_MS) -> dict[str, Any]:
    """Consumer options for the processors' group (``session_timeout_ms`` unless
    CFSTREAM_KAFKA_CONFIG sets one: :func:`cfstream.kafka.sessions.member_session_ms`)."""
    # A partition resumed after its restore is fetched once the broker answers the fetch it
    # holds for the others: at most this long (librdkafka's default is 500 ms).
    return kafka_config.group_config(settings, settings.processor_group,
                                     session_timeout_ms=session_timeout_ms,
                                     instance_id=settings.instance_id,
                                     **{"enable.partition.eof": False, "fetch.wait.max.ms": 100})


def leaves_on_stop(settings: Settings) -> bool:
    """Whether a stop must leave the group itself (close() would not): a static member on the
    classic protocol that hands its partitions over at once."""
    return (settings.instance_id is not None and settings.leave_on_stop
            and not kafka_config.consumer_protocol(settings))


def announce(settings: Settings, config: dict[str, Any]) -> None:
    """Say at start how this replica, joining with consumer ``config``, is a member of its
    group."""
    if settings.standby_replicas > 0 and kafka_config.consumer_protocol(settings):
        logger.warning("no standby copies under group.protocol=consumer: the broker places the "
                       "partitions, so a takeover restores what its disk lacks (set "
                       "CFSTREAM_STANDBY_REPLICAS=0 to say this is intended)")
    if settings.instance_id is None:
        return
    if kafka_config.consumer_protocol(settings):
        logger.log(logging.WARNING if settings.leave_on_stop else logging.INFO,
                   "static member %s of %s under group.protocol=consumer: librdkafka cannot make "
                   "a static member leave for good, so its partitions move only after the "
                   "broker's group.consumer.session.timeout.ms (45 s by default)",
                   settings.instance_id, settings.processor_group)
    else:
        session = config["session.timeout.ms"]
        logger.info("static member %s of %s (session %s ms): a stop %s", settings.instance_id,
                    settings.processor_group, session,
                    "hands its partitions over" if settings.leave_on_stop
                    else "keeps its partitions for a restart within the session")


def close(consumer: Consumer, settings: Settings, usable: bool = True) -> None:
    """Leave the group or stay in it, as configured, and close ``consumer``. Closing revokes
    what is left (the revoke callback commits and closes each partition)."""
    if not usable:  # after a fatal error close() only raises it again
        with contextlib.suppress(KafkaException):
            consumer.close()
        return
    if leaves_on_stop(settings):
        leave(consumer, settings)
    consumer.close()


def leave(consumer: Consumer, settings: Settings, groups: Groups | None = None) -> None:
    """Leave the group now and hand the partitions over: unsubscribe, poll until the revoke is
    served (the revoke callback commits and closes the partitions), then wait until the group
    (read through ``groups``) no longer lists this member. Records polled meanwhile are dropped:
    they are not committed."""
    started = time.monotonic()
    member = consumer.memberid()  # unsubscribe() resets it
    consumer.unsubscribe()
    deadline = started + REVOKE_TIMEOUT
    while consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(LEAVE_POLL)
    if consumer.assignment():
        logger.warning("partitions still assigned %.0fs after unsubscribing", REVOKE_TIMEOUT)
    if not member:
        return
    groups = groups or Groups(settings)
    try:
        gone = _wait_gone(consumer, groups, settings.processor_group, member)
    finally:
        groups.close()
    if gone:
        logger.info("left the group in %.2fs", time.monotonic() - started)
    else:
        logger.warning("the group still lists this replica %.0fs after it left: its partitions "
                       "move when its session times out", LEAVE_CONFIRM_TIMEOUT)


def _wait_gone(consumer: Consumer, groups: Groups, group: str, member: str) -> bool:
    """Whether ``group`` stopped listing ``member`` within LEAVE_CONFIRM_TIMEOUT (polling
    ``consumer`` meanwhile, so its leave goes out)."""
    deadline = time.monotonic() + LEAVE_CONFIRM_TIMEOUT
    while time.monotonic() < deadline:
        future = groups.describe(group, max(0.1, deadline - time.monotonic()))
        while not future.done():
            consumer.poll(LEAVE_POLL)
        try:
            members = {m.member_id for m in future.result().members}
        except GroupReadError as exc:
            logger.info("could not describe group %s: %s", group, exc)
            members = {member}
        if member not in members:
            return True
        consumer.poll(LEAVE_POLL)
    return False
