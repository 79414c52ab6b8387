"""A local cluster on disk: its record, a dir per node, each node's ports and server.properties.

    <data-dir>/cluster.json   the cluster's size and id, written when it is first started
    <data-dir>/node-<i>/      node i (Kafka node id i), laid out as a single broker's data dir:
                              server.properties, broker.pid, broker.log, logs/ (its storage,
                              the KRaft metadata log too)

Every node is a voter of the controller quorum, listed statically in each server.properties, so
a node started again on its dir and ports rejoins. Ports are chosen when the whole cluster
starts: ``port`` P gives node i the client port P + i - 1; without one, the nodes keep the
ports they had if all are free, else get free ones; controller ports likewise.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cfstream.dev import broker, node, procs
from cfstream.dev.properties import FILE_NAME, listener_port, server_properties
from cfstream.errors import ConfigurationError, KafkaUnavailable

CLUSTER_FILE = "cluster.json"


@dataclass(frozen=True)
class ClusterRecord:
    nodes: int
    cluster_id: str


def node_dir(data_dir: Path, node_id: int) -> Path:
    return data_dir / f"node-{node_id}"


def is_cluster(data_dir: Path | str) -> bool:
    return (Path(data_dir) / CLUSTER_FILE).is_file()


def read_record(data_dir: Path) -> ClusterRecord | None:
    try:
        return ClusterRecord(**json.loads((data_dir / CLUSTER_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def configured_port(data_dir: Path, node_id: int) -> int | None:
    """The client port node ``node_id`` has in its server.properties, running or not."""
    return listener_port(node_dir(data_dir, node_id), "PLAINTEXT")


def claim(path: Path, nodes: int) -> ClusterRecord:
    """The cluster record of ``path``, written now for a new cluster; KafkaUnavailable if
    ``path`` holds a single broker or a cluster of another size."""
    if nodes < 1:
        raise ConfigurationError(f"a cluster needs at least one node, not {nodes}")
    record = read_record(path)
    if record is None:
        if any((path / name).exists() for name in ("logs", FILE_NAME, procs.PID_FILE)):
            raise KafkaUnavailable(
                f"{path} holds a single Kafka broker, not a cluster: start it without --nodes, "
                "or give the cluster another --data-dir."
            )
        record = ClusterRecord(nodes, node.new_cluster_id())
        path.mkdir(parents=True, exist_ok=True)
        (path / CLUSTER_FILE).write_text(json.dumps(asdict(record)) + "\n")
    if record.nodes != nodes:
        other = ("a single broker" if nodes == 1 else f"a cluster of {nodes}")
        raise KafkaUnavailable(
            f"{path} holds a Kafka cluster of {record.nodes} nodes (its voters are fixed): start "
            f"it with --nodes {record.nodes}, or give {other} another --data-dir."
        )
    return record


def draw_ports(path: Path, nodes: int, port: int | None) -> dict[int, node.Ports]:
    """Node id -> ports: clients on ``port`` + id - 1 (each checked free) or else the ports
    the nodes had if all are free, or else free ones; and a free controller port each."""
    if not port:
        had = {i: configured_ports(path, i) for i in range(1, nodes + 1)}
        if all(p is not None and not any(map(procs.port_in_use, (p.port, p.controller_port)))
               for p in had.values()):
            return {i: p for i, p in had.items() if p is not None}
    if port and port + nodes - 1 > 65535:
        raise ConfigurationError(f"ports {port}..{port + nodes - 1} run past 65535")
    taken: set[int] = set()
    clients = []
    for i in range(nodes):
        if port:
            broker.check_free(port + i, "--port")
        clients.append(port + i if port else broker.free_port_besides(taken))
        taken.add(clients[-1])
    controllers = []
    for _ in range(nodes):
        controllers.append(broker.free_port_besides(taken))
        taken.add(controllers[-1])
    return {i: node.Ports(clients[i - 1], controllers[i - 1]) for i in range(1, nodes + 1)}


def configured_ports(path: Path, node_id: int) -> node.Ports | None:
    """The ports in node ``node_id``'s server.properties, if it has one."""
    where = node_dir(path, node_id)
    port = listener_port(where, "PLAINTEXT")
    controller = listener_port(where, "CONTROLLER")
    return node.Ports(port, controller) if port and controller else None


def recorded_ports(path: Path, node_id: int) -> node.Ports:
    """The ports node ``node_id`` was started with, checked free: it must come back there."""
    ports = configured_ports(path, node_id)
    if ports is None:
        raise KafkaUnavailable(
            f"Node {node_id} has no usable {node_dir(path, node_id) / FILE_NAME}: stop the "
            f"cluster with `cfstream kafka stop --data-dir {path}` and start it again."
        )
    busy = [p for p in (ports.port, ports.controller_port) if procs.port_in_use(p)]
    if busy:
        raise KafkaUnavailable(
            f"Node {node_id} must come back on port {busy[0]} (its peers know it there), but "
            f"that port on {procs.HOST} is in use. Free it, or stop the cluster with "
            f"`cfstream kafka stop --data-dir {path}` and start it again on new ports."
        )
    return ports


def write_configs(path: Path, ports: dict[int, node.Ports]) -> None:
    """Each node's server.properties, all listing the same voters."""
    voters = [ports[i].controller_port for i in sorted(ports)]
    for i, p in ports.items():
        where = node_dir(path, i)
        where.mkdir(parents=True, exist_ok=True)
        (where / FILE_NAME).write_text(server_properties(
            p.port, p.controller_port, where, node_id=i, controller_ports=voters))
