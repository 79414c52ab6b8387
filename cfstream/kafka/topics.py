"""Creating cfstream's topics with the partition counts the processor relies on."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from cfstream.errors import ConfigurationError, KafkaUnavailable
from cfstream.kafka import replication
from cfstream.kafka.config import admin_config
from cfstream.settings import Settings

logger = logging.getLogger(__name__)

# Long enough for a broker that is still electing leaders after a start.
ADMIN_TIMEOUT = 30.0
# A wait shorter than this goes unmentioned; a longer one names what it waits for, every
# NOTICE_INTERVAL, so a person at `cfstream topics create` or a starting service sees why.
NOTICE_AFTER = 2.0
NOTICE_INTERVAL = 5.0
_ensured: set[tuple[str, str]] = set()
_lock = threading.Lock()
# Checks begun by ensure_topics_soon, not yet asked for.
_begun: dict[tuple[str, str], Future[list[str]]] = {}


def topic_specs(settings: Settings, partitions: int | None = None) -> dict[str, dict[str, Any]]:
    """Name -> (partitions, config) of every topic cfstream reads or writes; ``partitions``
    (the calls topic's count, if it exists) wins over the setting."""
    n = partitions or settings.partitions
    return {
        # The broker's append time on calls tells the processor how far it has read in time.
        settings.calls_topic: {"partitions": n,
                               "config": {"message.timestamp.type": "LogAppendTime"}},
        settings.executions_topic: {"partitions": n, "config": {}},
        settings.events_topic: {"partitions": n, "config": {}},
        settings.dead_letter_topic: {"partitions": 1, "config": {}},
        # The processors' table changelog: compacted, co-partitioned with calls.
        settings.changelog_topic: {"partitions": n, "config": {"cleanup.policy": "compact"}},
    }


def ensure_topics_soon(settings: Settings) -> None:
    """Begin :func:`ensure_topics` in a thread (it waits on the broker, and a starting replica
    has imports to do meanwhile); the next ``ensure_topics(settings)`` in this process waits for
    it and returns what it returned, or raises what it raised."""
    future: Future[list[str]] = Future()
    _begun[(settings.bootstrap_servers, settings.topic_prefix)] = future

    def check() -> None:
        try:
            future.set_result(_ensure_topics(settings, None))
        except BaseException as exc:  # noqa: BLE001 - raised again to whoever asks
            future.set_exception(exc)

    threading.Thread(target=check, name="cfstream-topics", daemon=True).start()


def ensure_topics(settings: Settings, admin: AdminClient | None = None) -> list[str]:
    """Create the missing topics; check that calls and executions are co-partitioned.

    Returns the names created. Cheap after the first call in a process.
    """
    begun = _begun.pop((settings.bootstrap_servers, settings.topic_prefix), None)
    if begun is not None:
        return begun.result()
    return _ensure_topics(settings, admin)


def _ensure_topics(settings: Settings, admin: AdminClient | None) -> list[str]:
    marker = (settings.bootstrap_servers, settings.topic_prefix)
    with _lock:
        if marker in _ensured:
            return []
        errors: list[KafkaError] = []
        if admin is None:
            config = admin_config(settings)
            log = config["error_cb"]

            def remember(error: KafkaError) -> None:
                errors.append(error)
                log(error)

            config["error_cb"] = remember
            admin = AdminClient(config)
        cluster = _metadata(admin, settings, errors)
        existing = cluster.topics
        calls = existing.get(settings.calls_topic)
        specs = topic_specs(settings, len(calls.partitions) if calls is not None else None)
        missing = {name: spec for name, spec in specs.items() if name not in existing}
        created = []
        if missing:
            created = _create(admin, _new_topics(settings, missing, len(cluster.brokers)))
            existing = _wait_for_leaders(admin, created)
        counts = {name: len(existing[name].partitions) for name in
                  (settings.calls_topic, settings.executions_topic) if name in existing}
        if len(set(counts.values())) > 1:
            raise ConfigurationError(
                f"{settings.calls_topic} and {settings.executions_topic} must have the same "
                f"partition count, found {counts}; recreate one of them"
            )
        _ensured.add(marker)
        return created


@dataclass(frozen=True)
class TopicShape:
    """What a topic has on the cluster: partitions, replicas, and min.insync.replicas."""

    partitions: int
    replicas: int
    min_insync: int | None  # None: the cluster would not say (no DescribeConfigs right)


def shapes(settings: Settings, names: Iterable[str],
           admin: AdminClient | None = None) -> dict[str, TopicShape]:
    """The shape of each of ``names`` that exists (its fewest replicas over its partitions)."""
    admin = admin or AdminClient(admin_config(settings))
    topics = admin.list_topics(timeout=ADMIN_TIMEOUT).topics
    present = [name for name in names if name in topics and topics[name].partitions]
    if not present:
        return {}
    asked = admin.describe_configs([ConfigResource(ResourceType.TOPIC, name) for name in present],
                                   request_timeout=ADMIN_TIMEOUT)
    min_insync = {resource.name: _min_insync(future) for resource, future in asked.items()}
    return {name: TopicShape(len(topics[name].partitions),
                             min(len(p.replicas) for p in topics[name].partitions.values()),
                             min_insync[name])
            for name in present}


def _min_insync(described: Future[dict[str, Any]]) -> int | None:
    try:
        return int(described.result()["min.insync.replicas"].value)
    except KafkaException:
        return None


def _new_topics(settings: Settings, specs: dict[str, dict[str, Any]],
                brokers: int) -> list[NewTopic]:
    """``specs`` as topics to create, replicated for a cluster of ``brokers`` (said once)."""
    chosen = replication.choose(settings, brokers)
    logger.info("creating topics %s with %s", ", ".join(specs), chosen.describe())
    return [NewTopic(name, num_partitions=spec["partitions"], replication_factor=chosen.factor,
                     config={**spec["config"], "min.insync.replicas": str(chosen.min_insync)})
            for name, spec in specs.items()]


class Notice:
    """Logs what a wait still waits for, once it has taken more than NOTICE_AFTER seconds."""

    def __init__(self, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.clock = clock
        self.began = clock()
        self.due = self.began + NOTICE_AFTER

    def __call__(self, names: Iterable[str]) -> None:
        now = self.clock()
        if now >= self.due:
            self.due = now + NOTICE_INTERVAL
            logger.info("%s %s (%.0fs so far, giving up after %.0fs)", self.what,
                        ", ".join(sorted(names)), now - self.began, ADMIN_TIMEOUT)


def _create(admin: AdminClient, missing: list[NewTopic]) -> list[str]:
    """Create ``missing``; the names created (one created meanwhile by another client is not)."""
    logger.debug("creating topics %s", ", ".join(t.topic for t in missing))
    waiting = admin.create_topics(missing)
    notice = Notice("creating topics")
    deadline = time.monotonic() + ADMIN_TIMEOUT
    created = []
    while waiting:
        wait(waiting.values(), timeout=min(0.5, max(0.0, deadline - time.monotonic())))
        for name, future in list(waiting.items()):
            if not future.done():
                continue
            del waiting[name]
            try:
                future.result()
                created.append(name)
                logger.info("created topic %s", name)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise KafkaUnavailable(f"cannot create topic {name}: {exc}") from exc
        if not waiting:
            break
        if time.monotonic() >= deadline:
            raise KafkaUnavailable(f"no answer creating topics {', '.join(sorted(waiting))} "
                                   f"within {ADMIN_TIMEOUT:.0f}s")
        notice(waiting)
    return created


def _metadata(admin: AdminClient, settings: Settings, errors: list[KafkaError]) -> Any:
    """The cluster's metadata (brokers, topics); KafkaUnavailable at once if the broker refused
    the login, else after ADMIN_TIMEOUT. librdkafka reports SASL failures only to error_cb,
    served by poll()."""
    deadline = time.monotonic() + ADMIN_TIMEOUT
    notice = Notice("waiting for Kafka at")
    while True:
        try:
            return admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
        except KafkaException as exc:
            admin.poll(0)
            refused = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
            if refused:
                raise KafkaUnavailable(
                    f"Kafka at {settings.bootstrap_servers} refused the login "
                    f"(authentication failed: {refused[-1].str()}); check "
                    "CFSTREAM_SECURITY_PROTOCOL, CFSTREAM_SASL_MECHANISM, "
                    "CFSTREAM_SASL_USERNAME and CFSTREAM_SASL_PASSWORD"
                ) from exc
            if time.monotonic() >= deadline:
                raise KafkaUnavailable(
                    f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}. Start one with "
                    "`cfstream kafka start` or set CFSTREAM_BOOTSTRAP_SERVERS"
                ) from exc
            notice([settings.bootstrap_servers])


def _wait_for_leaders(admin: AdminClient, names: list[str]) -> dict[str, Any]:
    """Metadata once every partition of ``names`` has a leader (new topics elect them first)."""
    deadline = time.monotonic() + ADMIN_TIMEOUT
    notice = Notice("waiting for partition leaders of topics")
    while True:
        topics = admin.list_topics(timeout=ADMIN_TIMEOUT).topics
        leaderless = [name for name in names
                      if not (name in topics and topics[name].partitions
                              and not topics[name].error
                              and all(p.leader >= 0 and not p.error
                                      for p in topics[name].partitions.values()))]
        if not leaderless or time.monotonic() > deadline:
            return dict(topics)
        notice(leaderless)
        time.sleep(0.1)
