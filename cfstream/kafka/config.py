"""librdkafka settings shared by every cfstream client: connection from Settings, then our defaults."""

from __future__ import annotations

import logging
from typing import Any

from cfstream.settings import Settings

logger = logging.getLogger("cfstream.kafka")
# librdkafka's own log lines go through Python logging (and so CFSTREAM_LOG_FORMAT), not stderr.
librdkafka_logger = logging.getLogger("cfstream.kafka.librdkafka")

# Java clients, aiokafka and faust place keys with murmur2; librdkafka's default is CRC32.
PARTITIONER = "murmur2_random"
# After a broker dies, a client may hold metadata naming no leader for a partition. librdkafka
# keeps it for 3 x topic.metadata.refresh.interval.ms (15 min by default), and calls that read
# the cache (get_watermark_offsets) fail with "Unknown partition" all that time: a processor's
# changelog restore did, for as long as we watched (90 s), after a leader kill on 3 brokers.
# A 5 s refresh finds new leaders within seconds; the cache then lasts 15 s at most.
METADATA_REFRESH_MS = 5_000
# A new client learns the cluster's brokers from a bootstrap server, drops that connection and
# connects to the broker it learned, but not sooner than half of reconnect.backoff.ms after its
# last connection attempt (librdkafka logs "still suppressed for 49ms"). At librdkafka's 100 ms
# every client's first request took ~57 ms on a local broker, and a replica's launch waits for
# several (the topics check, the group join); at 20 ms it took 17 ms. A broker that stays
# down is still retried less and less often, up to reconnect.backoff.max.ms (10 s).
RECONNECT_BACKOFF_MS = 20


def _cluster_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """What every client gets: to ride out a broker's death (METADATA_REFRESH_MS), and to reach
    the cluster soon after it starts (RECONNECT_BACKOFF_MS)."""
    config.setdefault("topic.metadata.refresh.interval.ms", METADATA_REFRESH_MS)
    config.setdefault("reconnect.backoff.ms", RECONNECT_BACKOFF_MS)
    config.setdefault("error_cb", log_error)
    config.setdefault("logger", librdkafka_logger)
    return config


def log_error(error: Any) -> None:
    """Default ``error_cb``: librdkafka retries transient errors itself; say what happened."""
    logger.warning("kafka: %s", error)


# Every producer keeps one request in flight per broker and is not librdkafka's idempotent
# producer: that one busy-polls a core while a partition has messages in flight and records
# queued past linger.ms (it sets the wakeup before capping in-flight messages per partition;
# librdkafka#3692, still so at 2.16). Measured with the broker stopped for 2 s: 104-106 % of a
# core, also with one request in flight, against 3-6 % without idempotence. In the mixed
# benchmark the spinning submitter and worker took both cores and left the runnable broker none
# for seconds (bench/README.md, "Timers under mixed load").
# What idempotence gave is not needed: a retry may write a record twice, and a retriable broker
# error may put a batch after the next one (as may the processor's two producers of executions
# and events, cfstream/processor/outputs.py). Readers take either: calls by id and submit time
# (the rules), executions by id (workers), events by id and rank, and the changelog has one
# record a key in flight at a time, the next sent only once those before are delivered.
PRODUCER_DELIVERY = {"enable.idempotence": False, "max.in.flight.requests.per.connection": 1,
                     "acks": "all"}


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    config = _cluster_defaults(settings.librdkafka_config())
    config.setdefault("partitioner", PARTITIONER)
    for name, value in PRODUCER_DELIVERY.items():
        config.setdefault(name, value)
    config.setdefault("linger.ms", 5)  # batches bursts; adds at most 5 ms
    config.update(overrides)
    return config


def consumer_config(settings: Settings, group_id: str | None, **overrides: Any) -> dict[str, Any]:
    config = _cluster_defaults(settings.librdkafka_config())
    if group_id is not None:
        config["group.id"] = group_id
    else:
        config["group.id"] = "cfstream-unused"  # librdkafka wants one even for assign()
    config.setdefault("enable.auto.commit", False)  # we commit after the work is done
    config.setdefault("auto.offset.reset", "earliest")
    config.update(overrides)
    return config


# Heartbeats of a group member, from librdkafka's own thread.
HEARTBEAT_INTERVAL_MS = 1_000


def consumer_protocol(settings: Settings) -> bool:
    """Whether groups use the KIP-848 protocol (``group.protocol=consumer`` in
    CFSTREAM_KAFKA_CONFIG) rather than the classic one."""
    return str(settings.kafka_config.get("group.protocol", "classic")).lower() == "consumer"


def group_config(settings: Settings, group_id: str, *, session_timeout_ms: int,
                 instance_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A member of a consumer group that rebalances incrementally (``cooperative-sticky``): a
    rebalance never stops the partitions a member keeps. A member killed without leaving loses
    its partitions after ``session_timeout_ms``, unless CFSTREAM_KAFKA_CONFIG sets
    ``session.timeout.ms``. An ``instance_id`` makes it a static member (``group.instance.id``).

    With ``group.protocol=consumer`` (KIP-848) in CFSTREAM_KAFKA_CONFIG the broker assigns and
    owns the session timeout, so the classic options are left out.
    """
    if not consumer_protocol(settings):
        session = settings.kafka_config.get("session.timeout.ms", session_timeout_ms)
        overrides = {"partition.assignment.strategy": "cooperative-sticky",
                     "session.timeout.ms": session,
                     "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
                     **overrides}
    if instance_id is not None:
        overrides["group.instance.id"] = instance_id
    return consumer_config(settings, group_id, **overrides)


def admin_config(settings: Settings) -> dict[str, Any]:
    return _cluster_defaults(settings.librdkafka_config())
