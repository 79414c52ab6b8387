"""A node's ``server.properties``: its listeners, its quorum (one node or a cluster's voters),
replication defaults, and the optional SASL listener.

Written again at every start, so a port chosen anew (the controller's) is always the one in use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from cfstream.dev import procs
from cfstream.errors import ConfigurationError
from cfstream.kafka.replication import auto_factor, auto_min_insync

FILE_NAME = "server.properties"
# The optional SASL listener: its name is also its security protocol. PLAINTEXT stays the
# inter-broker and controller side, so only clients authenticate.
SASL_LISTENER = "SASL_PLAINTEXT"
SASL_MECHANISM = "PLAIN"
# `cfstream kafka start --sasl` without --sasl-user: a dev broker on loopback, not a secret.
DEFAULT_SASL_USERS = {"cfstream": "cfstream-secret"}
# JAAS option names are user_<name>; values are double-quoted (so no quote or backslash), and
# Kafka reads server.properties as ISO-8859-1: printable ASCII only.
_SASL_NAME = re.compile(r"[A-Za-z0-9._-]+")
_SASL_PASSWORD = re.compile(r"[!#-\[\]-~]+")
# A cluster's failure detection. The controller fences a node that missed heartbeats for
# SESSION_MS and takes it out of every ISR: after a kill -9, acks=all writes waited 8-9 s here
# with 6 s (10-12 s with Kafka's 9 s). 3 s keeps a killed group coordinator's successor up
# before the processors' 6 s consumer session runs out (with 6 s every processor lost its
# partitions and restored them). Still 6 heartbeats long, so a busy 2-core box does not fence
# a live node. A live follower behind for REPLICA_LAG_MS leaves the ISR (Kafka: 30 s).
HEARTBEAT_MS = 500
SESSION_MS = 3000
REPLICA_LAG_MS = 10000


def check_sasl_users(users: Mapping[str, str]) -> dict[str, str]:
    """``users`` as a dict; ConfigurationError unless each fits the broker's JAAS config."""
    if not users:
        raise ConfigurationError("a SASL listener needs at least one user")
    for name, password in users.items():
        if not _SASL_NAME.fullmatch(name):
            raise ConfigurationError(
                f"SASL user name {name!r} must be letters, digits, '.', '_' or '-'")
        if not _SASL_PASSWORD.fullmatch(password):
            raise ConfigurationError(
                f"the password of SASL user {name!r} must be printable ASCII without spaces, "
                "quotes or backslashes")
    return dict(users)


def server_properties(port: int, controller_port: int, data_dir: Path, *,
                      sasl_port: int | None = None,
                      sasl_users: Mapping[str, str] | None = None,
                      node_id: int = 1, controller_ports: Sequence[int] | None = None) -> str:
    """A node's config: broker and controller in one JVM, everything on 127.0.0.1.

    Alone by default. In a cluster, ``controller_ports`` lists every node's controller port in
    node id order (node ``i`` at index ``i - 1``), the voters of the controller quorum.

    With ``sasl_port``, a second client listener there takes SASL_PLAINTEXT with mechanism
    PLAIN, for ``sasl_users`` (name -> password).
    """
    voters = tuple(controller_ports) if controller_ports is not None else (controller_port,)
    if voters[node_id - 1] != controller_port:
        raise ValueError(f"node {node_id}'s controller port {controller_port} is not the one "
                         f"its voters list gives it ({voters})")
    host = procs.HOST
    listeners = f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}"
    advertised = f"PLAINTEXT://{host}:{port}"
    protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    sasl = ""
    if sasl_port is not None:
        listeners += f",{SASL_LISTENER}://{host}:{sasl_port}"
        advertised += f",{SASL_LISTENER}://{host}:{sasl_port}"
        protocols += f",{SASL_LISTENER}:SASL_PLAINTEXT"
        sasl = _sasl_section(sasl_users if sasl_users is not None else DEFAULT_SASL_USERS)
    return f"""\
# Written by `cfstream kafka start` at every start: edits here are overwritten.
process.roles=broker,controller
node.id={node_id}
{_quorum(voters)}
listeners={listeners}
advertised.listeners={advertised}
listener.security.protocol.map={protocols}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs={data_dir / "logs"}
num.partitions=1
{_replication(len(voters))}
# Tests join groups constantly; Kafka's 3 s default only adds waiting on one node.
group.initial.rebalance.delay.ms=0
# Kafka's default, kept: consumers may subscribe before a topic exists.
# cfstream creates its own topics explicitly with the partition count it needs.
auto.create.topics.enable=true
# The cleaner's 128 MiB default buffer is heap the dev broker doesn't need.
log.cleaner.dedupe.buffer.size=33554432
{_failover() if len(voters) > 1 else ""}{sasl}"""


def _quorum(voters: Sequence[int]) -> str:
    """The static voter set: node ``i`` votes from ``voters[i - 1]``."""
    listed = ",".join(f"{i}@{procs.HOST}:{port}" for i, port in enumerate(voters, start=1))
    if len(voters) == 1:
        return f"""\
# A static one-voter quorum: the controller port may change between restarts.
controller.quorum.voters={listed}"""
    return f"""\
# A static quorum of {len(voters)} voters, each node one; every node lists the same ports.
controller.quorum.voters={listed}"""


def _replication(nodes: int) -> str:
    """Replicas and min ISR of new topics, internal ones included, by cfstream's own rule."""
    replicas = auto_factor(nodes)
    isr = auto_min_insync(replicas)
    why = ("# Internal topics must fit one broker, or groups and transactions hang." if nodes == 1
           else f"# {replicas} replicas, {isr} in sync: one node may die without stopping writes.")
    return f"""\
default.replication.factor={replicas}
min.insync.replicas={isr}
{why}
offsets.topic.replication.factor={replicas}
offsets.topic.num.partitions=10
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={isr}
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={isr}"""


def _failover() -> str:
    """Shorter failure detection than Kafka's defaults (a 9 s broker session, 30 s replica lag),
    so a killed node's partitions move and writes with acks=all resume within seconds."""
    return f"""\
# A killed node is fenced and out of every ISR within seconds (cfstream/dev/properties.py).
broker.heartbeat.interval.ms={HEARTBEAT_MS}
broker.session.timeout.ms={SESSION_MS}
replica.lag.time.max.ms={REPLICA_LAG_MS}
"""


def _sasl_section(users: Mapping[str, str]) -> str:
    """The SASL listener's mechanism and its users (name -> password), as JAAS config."""
    prefix = f"listener.name.{SASL_LISTENER.lower()}"
    jaas = "org.apache.kafka.common.security.plain.PlainLoginModule required " + " ".join(
        f'user_{name}="{password}"' for name, password in check_sasl_users(users).items()) + ";"
    return f"""\
# Clients may also connect to {SASL_LISTENER} and authenticate with {SASL_MECHANISM}.
sasl.enabled.mechanisms={SASL_MECHANISM}
{prefix}.sasl.enabled.mechanisms={SASL_MECHANISM}
{prefix}.plain.sasl.jaas.config={jaas}
"""


def sasl_port_of(data_dir: Path) -> int | None:
    """The SASL listener's port in ``data_dir``'s server.properties (written at every start)."""
    return listener_port(data_dir, SASL_LISTENER)


def listener_port(data_dir: Path, listener: str) -> int | None:
    """The port of ``listener`` (PLAINTEXT, CONTROLLER, ...) in ``data_dir``'s server.properties."""
    try:
        text = (data_dir / FILE_NAME).read_text()
    except OSError:
        return None
    match = re.search(rf"^listeners=.*\b{listener}://[^,:]+:(\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else None
