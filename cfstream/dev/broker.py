"""A real single-node Apache Kafka 4 broker (KRaft, combined broker+controller) for dev and tests.

    with LocalBroker() as broker:          # free port, temporary data dir
        use(broker.bootstrap_servers)      # "127.0.0.1:PORT"

    with LocalBroker(sasl_users={"alice": "alice-secret"}) as broker:
        use(broker.sasl_bootstrap_servers) # SASL_PLAINTEXT, mechanism PLAIN, on another port

``start``/``stop``/``status`` back ``cfstream kafka start|stop|status``. The node's config is
written by :mod:`cfstream.dev.properties`, its JVM run by :mod:`cfstream.dev.node`; the broker
logs to ``<data-dir>/broker.log`` and is recorded in ``<data-dir>/broker.pid``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from cfstream.dev import jvm, node, procs
from cfstream.dev.jars import Notify, ensure_jars
from cfstream.dev.properties import (
    DEFAULT_SASL_USERS,
    FILE_NAME,
    check_sasl_users,
    sasl_port_of,
    server_properties,
)
from cfstream.errors import KafkaUnavailable

DEFAULT_PORT = 9092
DEFAULT_DATA_DIR = Path(".cfstream/kafka")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    data_dir: Path
    pid: int | None = None
    port: int | None = None
    sasl_port: int | None = None

    @property
    def bootstrap_servers(self) -> str | None:
        return f"{procs.HOST}:{self.port}" if self.running and self.port else None

    @property
    def sasl_bootstrap_servers(self) -> str | None:
        """The SASL_PLAINTEXT (PLAIN) listener's address, if the broker has one."""
        return f"{procs.HOST}:{self.sasl_port}" if self.running and self.sasl_port else None


def status(data_dir: Path | str = DEFAULT_DATA_DIR) -> BrokerStatus:
    """Whether the broker recorded in ``data_dir`` runs, with its pid and port."""
    path = Path(data_dir).resolve()
    record = procs.read_pid(path)
    if record is None or not procs.is_our_broker(record.pid, path):
        return BrokerStatus(running=False, data_dir=path)
    return BrokerStatus(running=True, data_dir=path, pid=record.pid, port=record.port,
                        sasl_port=sasl_port_of(path))


def start(
    port: int | None = DEFAULT_PORT,
    data_dir: Path | str = DEFAULT_DATA_DIR,
    *,
    sasl: bool = False,
    sasl_port: int | None = None,
    sasl_users: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT_S,
    notify: Notify | None = None,
) -> BrokerStatus:
    """Start the broker (``port`` None or 0: any free one); return once it answers metadata.

    ``sasl`` (implied by ``sasl_port`` or ``sasl_users``) adds a SASL_PLAINTEXT listener with
    mechanism PLAIN on ``sasl_port`` (None or 0: any free one) for ``sasl_users`` (name ->
    password, default :data:`DEFAULT_SASL_USERS`); PLAINTEXT stays open on ``port``.

    Formats ``data_dir`` on first use and reuses it afterwards. Returns the running broker if
    one already runs on this data dir. Raises KafkaUnavailable saying what to do.
    """
    sasl = sasl or bool(sasl_port) or sasl_users is not None
    users = check_sasl_users(sasl_users if sasl_users is not None
                             else DEFAULT_SASL_USERS) if sasl else None
    path = Path(data_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    current = status(path)
    if current.running:
        _check_same_broker(current, port, sasl, sasl_port)
        return current
    procs.remove_pid(path)  # stale: its process is gone
    port, sasl_port = _check_ports(port, sasl_port)
    java = jvm.find_java()
    lib = ensure_jars(notify=notify)
    # Free ports are drawn after the (maybe long) jar download, so they are still free.
    ports = _draw_ports(port, sasl_port, sasl)
    props = path / FILE_NAME
    props.write_text(server_properties(ports.port, ports.controller_port, path,
                                       sasl_port=ports.sasl_port, sasl_users=users))
    if not node.is_formatted(path):
        node.format_storage(java, lib, props, path)
    pid = _run(java, lib, props, path, ports, time.monotonic() + timeout)
    return BrokerStatus(running=True, data_dir=path, pid=pid, port=ports.port,
                        sasl_port=ports.sasl_port)


def _check_same_broker(current: BrokerStatus, port: int | None, sasl: bool,
                       sasl_port: int | None) -> None:
    """KafkaUnavailable unless the broker running on the data dir is the one asked for."""
    path = current.data_dir
    if port and port != current.port:
        raise KafkaUnavailable(
            f"A broker for {path} already runs on port {current.port} (pid {current.pid}); "
            f"stop it first with `cfstream kafka stop --data-dir {path}`."
        )
    if sasl and (current.sasl_port is None or (sasl_port and sasl_port != current.sasl_port)):
        where = (f"its SASL listener on port {current.sasl_port}" if current.sasl_port
                 else "no SASL listener")
        raise KafkaUnavailable(
            f"A broker for {path} already runs on port {current.port} with {where} "
            f"(pid {current.pid}); stop it first with `cfstream kafka stop --data-dir {path}`."
        )


def _check_ports(port: int | None, sasl_port: int | None) -> tuple[int, int | None]:
    """The ports asked for, each checked free; a free PLAINTEXT port if none was."""
    if not port:  # None or 0: any free port
        port = procs.free_port()
    else:
        check_free(port, "--port")
    if sasl_port:
        if sasl_port == port:
            raise KafkaUnavailable(f"The SASL port must differ from the PLAINTEXT port {port}.")
        check_free(sasl_port, "--sasl-port")
    return port, sasl_port or None


def _draw_ports(port: int, sasl_port: int | None, sasl: bool) -> node.Ports:
    """A free controller port, and a free SASL port if one is needed and none was asked for."""
    taken = {port}
    if sasl:
        sasl_port = sasl_port or free_port_besides(taken)
        taken.add(sasl_port)
    return node.Ports(port, free_port_besides(taken), sasl_port if sasl else None)


def check_free(port: int, option: str) -> None:
    if procs.port_in_use(port):
        raise KafkaUnavailable(
            f"Port {port} on {procs.HOST} is already in use. Stop whatever listens there, choose "
            f"another port with {option}, or, if it is a Kafka broker, point "
            f"CFSTREAM_BOOTSTRAP_SERVERS at {procs.HOST}:{port} instead of starting one."
        )


def free_port_besides(taken: set[int]) -> int:
    port = procs.free_port()
    while port in taken:
        port = procs.free_port()
    return port


def _run(java: jvm.Java, lib: Path, props: Path, data_dir: Path, ports: node.Ports,
         deadline: float) -> int:
    """Launch the node and record it in the pid file; its pid once it answers. A node that
    does not come up is stopped and forgotten again."""
    proc, pending = node.start_recorded(java, lib, props, data_dir, ports)
    try:
        node.wait_ready(proc, ports.port, data_dir, deadline, ports.sasl_port)
    except BaseException:
        node.forget(proc.pid, data_dir, pending)
        raise
    return proc.pid


def stop(data_dir: Path | str = DEFAULT_DATA_DIR, *, timeout: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM the broker of ``data_dir`` (SIGKILL after ``timeout``); False if none ran."""
    path = Path(data_dir).resolve()
    record = procs.read_pid(path)
    if record is None:
        return False
    was_running = procs.is_our_broker(record.pid, path)
    clean = True
    if was_running:
        clean = node.terminate(record.pid, path, grace=timeout)
    pending = Path(record.pending_archive) if record.pending_archive else None
    jvm.promote_archive(pending, keep=clean)
    procs.remove_pid(path)
    return was_running


class _Started(Protocol):
    @property
    def bootstrap_servers(self) -> str | None: ...


class LocalKafka:
    """What :class:`LocalBroker` and the cluster's ``LocalCluster`` share: started on entering a
    ``with`` block, stopped on leaving it; a temporary data dir (none given) is deleted then."""

    status: _Started | None

    def __init__(self, data_dir: Path | str | None, timeout: float) -> None:
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="cfstream-kafka-")).resolve()
        self.timeout = timeout

    @property
    def bootstrap_servers(self) -> str:
        """Where clients connect, as started (a cluster lists every node, even one down later:
        clients skip it)."""
        if self.status is None or self.status.bootstrap_servers is None:
            raise KafkaUnavailable(f"{type(self).__name__} on {self.data_dir} is not started")
        return self.status.bootstrap_servers

    def start(self) -> Self:
        raise NotImplementedError

    def _stop(self) -> None:
        raise NotImplementedError

    def stop(self, *, remove_data: bool | None = None) -> None:
        self._stop()
        if self._own_dir if remove_data is None else remove_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LocalBroker(LocalKafka):
    """A broker for the span of a ``with`` block; a temporary data dir is deleted afterwards.

    ``sasl_users`` (name -> password) also opens a SASL_PLAINTEXT listener (mechanism PLAIN) on
    ``sasl_port`` (None: a free one), at :attr:`sasl_bootstrap_servers`.
    """

    def __init__(
        self, port: int | None = None, data_dir: Path | str | None = None,
        *, sasl_users: Mapping[str, str] | None = None, sasl_port: int | None = None,
        timeout: float = START_TIMEOUT_S,
    ) -> None:
        super().__init__(data_dir, timeout)
        self.port = port
        self.sasl_users = dict(sasl_users) if sasl_users is not None else None
        self.sasl_port = sasl_port
        self.status: BrokerStatus | None = None

    @property
    def sasl_bootstrap_servers(self) -> str:
        if self.status is None or self.status.sasl_bootstrap_servers is None:
            raise KafkaUnavailable(f"LocalBroker on {self.data_dir} has no SASL listener running")
        return self.status.sasl_bootstrap_servers

    def start(self) -> Self:
        self.status = start(self.port, self.data_dir, sasl_users=self.sasl_users,
                            sasl_port=self.sasl_port, timeout=self.timeout)
        self.port = self.status.port
        self.sasl_port = self.status.sasl_port
        return self

    def _stop(self) -> None:
        stop(self.data_dir)
        self.status = None
