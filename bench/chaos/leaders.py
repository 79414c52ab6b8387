"""Cluster mode (``--nodes 3``): kill -9 the node leading a partition of one of cfstream's topics
under load, start it again, and wait until every replica is back in sync before the next kill
(two nodes down at once would stop acks=all writes, which is not what this measures).

The processors and workers are never killed in this mode: any restart of theirs is a crash.
"""

from __future__ import annotations

import random
import time

from confluent_kafka.admin import AdminClient

from bench.chaos.cluster import log
from bench.chaos.reconcile import Disruption
from cfstream.clock import now_ms
from cfstream.dev.cluster import LocalCluster
from cfstream.settings import Settings

# The topics whose partition leaders are killed, one each, in this order.
TOPICS = ("calls", "changelog", "executions")
ACTION = "kill_leader"
# How long a killed node stays down before its restart begins (the restart itself then waits
# out the broker session, cfstream.dev.properties.SESSION_MS, before the node is taken back).
DOWN_S = 3.0
# After a restart, how long the replicas get to catch up before the next kill may come.
IN_SYNC_TIMEOUT_S = 60.0
# A kill comes this long after the one before it at the least, however soon that node was back:
# each kill's window (until the next) then holds enough calls to show what it cost. A node back
# in 9 s left a window of 11 s and 83 calls (a fresh-clone run of tests/chaos).
MIN_WINDOW_S = 20.0
# The first kill comes this long into the load, so the window before it shows the baseline.
FIRST_KILL_S = 5.0


def kind(topic: str) -> str:
    """The disruption kind of a kill of ``topic``'s leader, as the reconcile names it."""
    return f"leader:{topic}"


def plan(duration: float) -> list[tuple[float, str]]:
    """One kill per topic, spread over the load (a kill runs late if the one before it is not
    done, each waiting for its node to be back and in sync, or began less than
    :data:`MIN_WINDOW_S` before)."""
    spacing = max(0.0, duration - FIRST_KILL_S) / len(TOPICS)
    return [(FIRST_KILL_S + spacing * n, f"{ACTION}:{topic}") for n, topic in enumerate(TOPICS)]


def topic_name(settings: Settings, topic: str) -> str:
    names = {"calls": settings.calls_topic, "changelog": settings.changelog_topic,
             "executions": settings.executions_topic}
    return names[topic]


def kill_leader(kafka: LocalCluster, settings: Settings, topic: str,
                rng: random.Random) -> Disruption:
    """kill -9 the leader of a random partition of ``topic``, start it again after
    :data:`DOWN_S`, and wait until every partition of the run's topics is fully in sync."""
    name = topic_name(settings, topic)
    partition = rng.randrange(settings.partitions)
    node = kafka.leader(name, partition)
    killed = now_ms()
    node.kill()
    log(f"kill -9 node {node.node_id}, leader of {name} [{partition}]")
    time.sleep(DOWN_S)
    node.start()
    back = now_ms()
    log(f"node {node.node_id} back after {(back - killed) / 1000:.1f}s")
    waited = wait_in_sync(kafka.bootstrap_servers, settings.topic_prefix, kafka.nodes,
                          IN_SYNC_TIMEOUT_S)
    if waited is None:
        raise TimeoutError(f"replicas of {settings.topic_prefix}.* not all in sync "
                           f"{IN_SYNC_TIMEOUT_S:.0f}s after node {node.node_id} came back")
    log(f"every replica in sync {waited:.1f}s after node {node.node_id} came back")
    return Disruption(kind(topic), f"{name}[{partition}] node {node.node_id}", killed, back)


def wait_in_sync(bootstrap: str, prefix: str, replicas: int, timeout: float) -> float | None:
    """Seconds until every partition of the topics named ``prefix``.* (or ``prefix`` itself)
    has ``replicas`` in sync (None after ``timeout``)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        try:
            meta = admin.list_topics(timeout=5)
        except Exception:  # noqa: BLE001 - metadata moving with the node: ask again
            time.sleep(0.5)
            continue
        partitions = [p for name, t in meta.topics.items()
                      if name == prefix or name.startswith(prefix + ".")
                      for p in t.partitions.values()]
        if partitions and all(len(p.isrs) >= replicas for p in partitions):
            return time.monotonic() - began
        time.sleep(0.5)
    return None
