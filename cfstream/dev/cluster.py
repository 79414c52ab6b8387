"""A local Apache Kafka 4 cluster: several nodes on loopback, each broker and controller (KRaft).

    with LocalCluster(nodes=3) as cluster:     # free ports, temporary data dir
        use(cluster.bootstrap_servers)         # "127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3"
        cluster.node(2).kill()                 # kill -9 the node with id 2 (a leader id names it)
        cluster.node(2).start()                # back on its storage and ports; it rejoins

``start``/``stop``/``status`` back ``cfstream kafka start --nodes N``, ``stop`` and ``status``
on a cluster's data dir (laid out by :mod:`cfstream.dev.cluster_layout`); each node runs as
:mod:`cfstream.dev.node` runs a single broker.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from confluent_kafka.admin import AdminClient

from cfstream.dev import broker, jvm, node, procs
from cfstream.dev.broker import (
    DEFAULT_DATA_DIR,
    DEFAULT_PORT,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    BrokerStatus,
    LocalKafka,
)
from cfstream.dev.cluster_layout import (
    ClusterRecord,
    claim,
    configured_port,
    draw_ports,
    node_dir,
    read_record,
    recorded_ports,
    write_configs,
)
from cfstream.dev.jars import Notify, ensure_jars
from cfstream.dev.properties import FILE_NAME
from cfstream.errors import KafkaUnavailable

# A 3-voter quorum outlives one node lost: the smallest cluster worth testing failover on.
DEFAULT_NODES = 3


@dataclass(frozen=True)
class ClusterStatus:
    """Each node's status, node ``i`` at index ``i - 1``."""

    data_dir: Path
    nodes: tuple[BrokerStatus, ...]

    @property
    def running(self) -> bool:
        return bool(self.nodes) and all(n.running for n in self.nodes)

    @property
    def running_ids(self) -> list[int]:
        return [i for i, n in enumerate(self.nodes, start=1) if n.running]

    @property
    def bootstrap_servers(self) -> str | None:
        """The running nodes' client addresses, comma-separated."""
        return ",".join(n.bootstrap_servers for n in self.nodes if n.bootstrap_servers) or None


def status(data_dir: Path | str = DEFAULT_DATA_DIR) -> ClusterStatus:
    """Whether each node recorded under ``data_dir`` runs, with its pid and port."""
    path = Path(data_dir).resolve()
    record = read_record(path)
    count = record.nodes if record else 0
    return ClusterStatus(path, tuple(broker.status(node_dir(path, i))
                                     for i in range(1, count + 1)))


def start(
    nodes: int = DEFAULT_NODES,
    port: int | None = DEFAULT_PORT,
    data_dir: Path | str = DEFAULT_DATA_DIR,
    *,
    timeout: float = START_TIMEOUT_S,
    notify: Notify | None = None,
) -> ClusterStatus:
    """Start the cluster; return once every node answers with all nodes registered (which
    takes a controller quorum with a leader).

    Formats each node's storage on first use (one cluster id) and reuses it afterwards. With
    some nodes running, starts only the others, on the ports they had. Raises KafkaUnavailable
    or ConfigurationError saying what to do.
    """
    path = Path(data_dir).resolve()
    record = claim(path, nodes)
    current = status(path)
    if current.running_ids:
        _check_same_cluster(path, port)
    if current.running:
        return current
    down = [i for i in range(1, nodes + 1) if i not in current.running_ids]
    if current.running_ids:
        return start_nodes(path, down, timeout=timeout, notify=notify)
    ports = draw_ports(path, nodes, port)
    java = jvm.find_java()
    lib = ensure_jars(notify=notify)
    write_configs(path, ports)
    _format(java, lib, path, record)
    _launch(java, lib, path, ports, time.monotonic() + timeout, brokers=nodes)
    return status(path)


def start_nodes(data_dir: Path, ids: Iterable[int], *, timeout: float = START_TIMEOUT_S,
                notify: Notify | None = None) -> ClusterStatus:
    """Start the nodes ``ids`` of a cluster others of which run, each on its own storage and
    ports (its peers know it there); return once each sees every running node."""
    path = Path(data_dir).resolve()
    current = status(path)
    ids = [i for i in ids if i not in current.running_ids]
    if len(current.running_ids) + len(ids) <= len(current.nodes) // 2:
        raise KafkaUnavailable(
            f"{len(current.running_ids) + len(ids)} of {len(current.nodes)} nodes cannot form "
            f"the controller quorum (a majority votes): start the whole cluster instead."
        )
    ports = {i: recorded_ports(path, i) for i in ids}
    java = jvm.find_java()
    lib = ensure_jars(notify=notify)
    _launch(java, lib, path, ports, time.monotonic() + timeout,
            brokers=len(current.running_ids) + len(ids))
    return status(path)


def stop(data_dir: Path | str = DEFAULT_DATA_DIR, *, timeout: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM every node at once (SIGKILL after ``timeout``); False if none ran."""
    path = Path(data_dir).resolve()
    record = read_record(path)
    if record is None:
        return False
    dirs = [node_dir(path, i) for i in range(1, record.nodes + 1)]
    # All at once: the stop takes as long as the slowest node, not their sum (the quorum's
    # leader waits up to 5 s for a successor that never comes).
    with ThreadPoolExecutor(max_workers=len(dirs)) as pool:
        stopped = list(pool.map(lambda d: broker.stop(d, timeout=timeout), dirs))
    return any(stopped)


def _check_same_cluster(path: Path, port: int | None) -> None:
    """KafkaUnavailable if ``port`` asks for other ports than those of the running cluster."""
    first = configured_port(path, 1)
    if port and port != first:
        raise KafkaUnavailable(
            f"A cluster for {path} already runs with node 1 on port {first}; stop it first "
            f"with `cfstream kafka stop --data-dir {path}`."
        )


def _format(java: jvm.Java, lib: Path, path: Path, record: ClusterRecord) -> None:
    """Format the storage of each node that has none, all with the cluster's id, in parallel."""
    todo = [node_dir(path, i) for i in range(1, record.nodes + 1)
            if not node.is_formatted(node_dir(path, i))]
    if not todo:
        return
    with ThreadPoolExecutor(max_workers=len(todo)) as pool:
        list(pool.map(lambda where: node.format_storage(
            java, lib, where / FILE_NAME, where, record.cluster_id), todo))


def _launch(java: jvm.Java, lib: Path, path: Path, ports: dict[int, node.Ports],
            deadline: float, brokers: int) -> None:
    """Launch the nodes ``ports`` names, then wait until each answers listing ``brokers``
    brokers. None answers before a majority of voters runs, so all launch first. If one fails,
    those launched here are stopped again."""
    launched: dict[int, tuple[subprocess.Popen[bytes], Path | None]] = {}
    try:
        for i, p in ports.items():
            where = node_dir(path, i)
            procs.remove_pid(where)  # stale: its process is gone
            launched[i] = node.start_recorded(java, lib, where / FILE_NAME, where, p)
        for i, (proc, _) in launched.items():
            node.wait_ready(proc, ports[i].port, node_dir(path, i), deadline, brokers=brokers)
    except BaseException:
        for i, (proc, pending) in launched.items():
            node.forget(proc.pid, node_dir(path, i), pending)
        raise


class ClusterNode:
    """One node of a :class:`LocalCluster`, to kill, stop and start on its own."""

    def __init__(self, cluster: LocalCluster, node_id: int) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.data_dir = node_dir(cluster.data_dir, node_id)

    @property
    def status(self) -> BrokerStatus:
        return broker.status(self.data_dir)

    @property
    def running(self) -> bool:
        return self.status.running

    @property
    def pid(self) -> int | None:
        return self.status.pid

    @property
    def port(self) -> int | None:
        """Its client port, running or not (it comes back on the same one)."""
        return configured_port(self.cluster.data_dir, self.node_id)

    def kill(self) -> None:
        """``kill -9``: no shutdown; the pid file stays behind, as after a crash."""
        current = self.status
        if current.pid is None:
            raise KafkaUnavailable(f"node {self.node_id} of {self.cluster.data_dir} is not running")
        node.kill(current.pid)

    def stop(self, *, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (a controlled shutdown: its partitions' leadership moves first)."""
        broker.stop(self.data_dir, timeout=timeout)

    def start(self, *, timeout: float | None = None) -> None:
        """Start it again on its storage and ports; returns once it sees every running node.

        Right after a kill this waits out the killed node's broker session
        (:data:`cfstream.dev.properties.SESSION_MS`): the controller takes the new incarnation
        only once the old one is fenced."""
        start_nodes(self.cluster.data_dir, [self.node_id],
                    timeout=self.cluster.timeout if timeout is None else timeout)

    def __repr__(self) -> str:
        return f"ClusterNode({self.node_id}, port={self.port})"


class LocalCluster(LocalKafka):
    """A cluster for the span of a ``with`` block; a temporary data dir is deleted afterwards.

    ``port`` P: node i serves clients on P + i - 1 (None: free ports). :meth:`node` gives
    node ``i`` (its Kafka node id, as a partition's leader names it) to kill or restart.
    """

    def __init__(self, nodes: int = DEFAULT_NODES, port: int | None = None,
                 data_dir: Path | str | None = None, *,
                 timeout: float = START_TIMEOUT_S) -> None:
        super().__init__(data_dir, timeout)
        self.nodes = nodes
        self.port = port
        self.status: ClusterStatus | None = None

    def node(self, node_id: int) -> ClusterNode:
        if not 1 <= node_id <= self.nodes:
            raise ValueError(f"node ids run from 1 to {self.nodes}, not {node_id}")
        return ClusterNode(self, node_id)

    def leader(self, topic: str, partition: int = 0, timeout: float = 10.0) -> ClusterNode:
        """The node leading ``partition`` of ``topic``, as the cluster's metadata says now."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 0})
        meta = admin.list_topics(topic, timeout=timeout).topics[topic]
        leader = meta.partitions[partition].leader if partition in meta.partitions else -1
        if leader < 0:
            raise KafkaUnavailable(f"{topic} [{partition}] has no leader now")
        return self.node(leader)

    def start(self) -> Self:
        # With port None, a cluster started again keeps its nodes' ports if they are free.
        self.status = start(self.nodes, self.port, self.data_dir, timeout=self.timeout)
        return self

    def _stop(self) -> None:
        stop(self.data_dir)
        self.status = None
