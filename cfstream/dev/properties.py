"""A broker node's ``server.properties``: its listeners, its quorum, and the optional SASL listener.

Written again at every start, so a port chosen anew (the controller's) is always the one in use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from cfstream.dev import procs
from cfstream.errors import ConfigurationError

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
                      sasl_users: Mapping[str, str] | None = None) -> str:
    """The broker's config: one node that is its own controller, everything on 127.0.0.1.

    With ``sasl_port``, a second client listener there takes SASL_PLAINTEXT with mechanism
    PLAIN, for ``sasl_users`` (name -> password).
    """
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
node.id=1
# A static one-voter quorum: the controller port may change between restarts.
controller.quorum.voters=1@{host}:{controller_port}
listeners={listeners}
advertised.listeners={advertised}
listener.security.protocol.map={protocols}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs={data_dir / "logs"}
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
# Internal topics must fit one broker, or groups and transactions hang.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests join groups constantly; Kafka's 3 s default only adds waiting on one node.
group.initial.rebalance.delay.ms=0
# Kafka's default, kept: consumers may subscribe before a topic exists.
# cfstream creates its own topics explicitly with the partition count it needs.
auto.create.topics.enable=true
# The cleaner's 128 MiB default buffer is heap the dev broker doesn't need.
log.cleaner.dedupe.buffer.size=33554432
{sasl}"""


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
    try:
        text = (data_dir / FILE_NAME).read_text()
    except OSError:
        return None
    match = re.search(rf"^listeners=.*\b{SASL_LISTENER}://[^,:]+:(\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else None
