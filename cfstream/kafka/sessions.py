"""How long a group member's session must last to outlive the loss of a broker.

A member whose heartbeats go unanswered for its whole ``session.timeout.ms`` gives its
partitions up (librdkafka decides this on its own side), and a static member that rejoins then
fences itself and exits (librdkafka#3437). When the broker coordinating a group dies, nobody
answers until the controller has fenced it (``broker.session.timeout.ms``: 9 s by default) and
the coordinator's successor is found. A member session shorter than that makes every loss of a
coordinator a rebalance of every member, restores included. So a service's session is its own
default, or the cluster's broker session plus MARGIN_MS, whichever is longer; a
``session.timeout.ms`` in CFSTREAM_KAFKA_CONFIG is taken as it is.

With a single broker there is nothing to outlive: losing it loses the cluster.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from cfstream.kafka.config import admin_config, consumer_protocol
from cfstream.settings import Settings

logger = logging.getLogger(__name__)

BROKER_SESSION = "broker.session.timeout.ms"
# From the fence to a heartbeat answered by the new coordinator. Measured on the dev cluster
# (bench/README.md, chaos on 3 nodes): 3 s broker sessions under 6 s member sessions kept every
# member through each kill of a coordinator; 6 s under 6 s did not.
MARGIN_MS = 3_000
TIMEOUT = 10.0


def member_session_ms(settings: Settings, default_ms: int,
                      admin: AdminClient | None = None) -> int:
    """The session a member of a consumer group joins with (classic protocol)."""
    configured = settings.kafka_config.get("session.timeout.ms")
    if configured is not None:
        return int(configured)
    if consumer_protocol(settings):  # the broker owns the session
        return default_ms
    broker = broker_session_ms(admin or AdminClient(admin_config(settings)))
    if broker is None or broker + MARGIN_MS <= default_ms:
        return default_ms
    logger.info("group session %d ms: the cluster fences a lost broker after %d ms (%s), and a "
                "member must outlive the loss of its coordinator", broker + MARGIN_MS, broker,
                BROKER_SESSION)
    return broker + MARGIN_MS


def member_session_soon(settings: Settings, default_ms: int) -> Future[int]:
    """:func:`member_session_ms`, asked in a thread of its own: a replica starting up goes on
    with its topics and warm-up while a client of its own connects and asks (~50 ms). A daemon
    thread: a replica that fails before it joins does not wait for the answer to exit."""
    future: Future[int] = Future()

    def look_up() -> None:
        try:
            future.set_result(member_session_ms(settings, default_ms))
        except BaseException as exc:  # noqa: BLE001 - raised again by future.result()
            future.set_exception(exc)

    threading.Thread(target=look_up, name="cfstream-session", daemon=True).start()
    return future


def broker_session_ms(admin: AdminClient) -> int | None:
    """The cluster's ``broker.session.timeout.ms`` as a broker reports it; None on a single
    broker or if it cannot be read."""
    try:
        brokers = admin.list_topics(timeout=TIMEOUT).brokers
        if len(brokers) < 2:
            return None
        resource = ConfigResource(ResourceType.BROKER, str(min(brokers)))
        configs = admin.describe_configs([resource], request_timeout=TIMEOUT)[resource].result()
    except KafkaException as exc:
        logger.info("could not read %s from the cluster: %s", BROKER_SESSION, exc)
        return None
    entry = configs.get(BROKER_SESSION)
    return int(entry.value) if entry is not None and entry.value is not None else None
