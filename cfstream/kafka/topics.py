"""Creating cfstream's topics with the partition counts the processor relies on."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from cfstream.errors import ConfigurationError, KafkaUnavailable
from cfstream.kafka.config import admin_config
from cfstream.processor.state import changelog_topic
from cfstream.settings import Settings

logger = logging.getLogger(__name__)

# Long enough for a broker that is still electing leaders after a start.
ADMIN_TIMEOUT = 30.0
_ensured: set[tuple[str, str]] = set()
_lock = threading.Lock()


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
        changelog_topic(settings): {"partitions": n, "config": {"cleanup.policy": "compact"}},
    }


def ensure_topics(settings: Settings, admin: AdminClient | None = None) -> list[str]:
    """Create the missing topics; check that calls and executions are co-partitioned.

    Returns the names created. Cheap after the first call in a process.
    """
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
        existing = _metadata(admin, settings, errors)
        calls = existing.get(settings.calls_topic)
        specs = topic_specs(settings, len(calls.partitions) if calls is not None else None)
        missing = [
            NewTopic(name, num_partitions=spec["partitions"],
                     replication_factor=settings.replication_factor, config=spec["config"])
            for name, spec in specs.items() if name not in existing
        ]
        created = []
        if missing:
            for name, future in admin.create_topics(missing).items():
                try:
                    future.result(timeout=ADMIN_TIMEOUT)
                    created.append(name)
                    logger.info("created topic %s", name)
                except KafkaException as exc:
                    if "TOPIC_ALREADY_EXISTS" not in str(exc):
                        raise KafkaUnavailable(f"cannot create topic {name}: {exc}") from exc
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


def _metadata(admin: AdminClient, settings: Settings, errors: list[KafkaError]) -> Any:
    """Topic metadata; KafkaUnavailable at once if the broker refused the login, else after
    ADMIN_TIMEOUT. librdkafka reports SASL failures only to error_cb, served by poll()."""
    deadline = time.monotonic() + ADMIN_TIMEOUT
    while True:
        try:
            return admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic()))
                                     ).topics
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


def _wait_for_leaders(admin: AdminClient, names: list[str]) -> dict[str, Any]:
    """Metadata once every partition of ``names`` has a leader (new topics elect them first)."""
    deadline = time.monotonic() + ADMIN_TIMEOUT
    while True:
        topics = admin.list_topics(timeout=ADMIN_TIMEOUT).topics
        ready = all(name in topics and topics[name].partitions and not topics[name].error
                    and all(p.leader >= 0 and not p.error
                            for p in topics[name].partitions.values())
                    for name in names)
        if ready or time.monotonic() > deadline:
            return dict(topics)
        time.sleep(0.1)
