"""Warming up before joining: a replica that joins a running group copies first.

A replica joining a group that runs without it (a scale-up, or a restart that left the group)
would otherwise take partitions cold and restore each before it runs it, while the calls there
wait. Kafka Streams warms such partitions up inside its assignor (KIP-441); librdkafka has no
custom assignors, so here the replica predicts what cooperative-sticky will give it
(:func:`cfstream.processor.placement.after_join`) and its standby set on that assignment, keeps
copies of them like any standby, and subscribes once each is within ACCEPTABLE_LAG records of
its changelog's end, or when CFSTREAM_WARMUP_TIMEOUT runs out. /readyz stays 503 meanwhile, so a
rollout waits for it. It re-predicts every PREDICT_INTERVAL, as the group may change meanwhile.

A static member the group still lists (back within its session) and the first replica of a
group join at once: nothing would move to them that they do not have.
"""

from __future__ import annotations

import logging
import threading
import time

from cfstream.processor import placement
from cfstream.processor.group import GroupView, Snapshot, standbys_of
from cfstream.processor.standby import Standbys
from cfstream.settings import Settings

logger = logging.getLogger(__name__)

# Kafka Streams' acceptable.recovery.lag: a takeover replays this many records in ~0.1 s.
ACCEPTABLE_LAG = 10_000
PREDICT_INTERVAL = 5.0
CHECK_INTERVAL = 0.1
RETRY_INTERVAL = 1.0


def warm_up(settings: Settings, group: GroupView, standbys: Standbys,
            stopping: threading.Event) -> set[int]:
    """Copy what this replica will be given when it joins, until close enough or timed out.
    Returns the partitions copied (they stay copied until the group's next snapshot)."""
    began = time.monotonic()
    deadline = began + settings.warmup_timeout
    me = placement.joining_id(settings.instance_id or "rdkafka")
    wanted: set[int] | None = None
    while not stopping.is_set() and time.monotonic() < deadline:
        snapshot = group.read()
        if snapshot is not None and _joins_at_once(snapshot, settings.instance_id):
            return set()
        if snapshot is None or not snapshot.stable:  # look again once it has settled
            stopping.wait(RETRY_INTERVAL)
            continue
        wanted = _predicted(snapshot, me, settings.standby_replicas)
        standbys.want(wanted, warm=True)
        logger.info("warming up %s[%s] before joining the group", settings.changelog_topic,
                    ",".join(map(str, sorted(wanted))))
        until = min(deadline, time.monotonic() + PREDICT_INTERVAL)
        while not _close_enough(standbys, wanted):
            if stopping.wait(CHECK_INTERVAL) or time.monotonic() >= until:
                break
        else:
            logger.info("warmed up in %.1fs", time.monotonic() - began)
            return wanted
    if wanted is not None and time.monotonic() >= deadline:
        logger.warning("joining after CFSTREAM_WARMUP_TIMEOUT (%.0fs) with copies still behind: "
                       "%s", settings.warmup_timeout, standbys.lags)
    return wanted or set()


def _joins_at_once(snapshot: Snapshot, instance_id: str | None) -> bool:
    return not snapshot.assignment or (
        instance_id is not None and instance_id in snapshot.instances.values())


def _predicted(snapshot: Snapshot, me: str, replicas: int) -> set[int]:
    """The partitions ``me`` owns, and copies, once it has joined."""
    after = placement.after_join(snapshot.assignment, me)
    owned = set(after.get(me, ()))
    joined = Snapshot({m: frozenset(ps) for m, ps in after.items()}, {})
    return owned | standbys_of(joined, me, replicas)


def _close_enough(standbys: Standbys, wanted: set[int]) -> bool:
    lags = standbys.lags
    return all(0 <= lags.get(p, -1) <= ACCEPTABLE_LAG for p in wanted)
