"""A real single-node Apache Kafka 4 broker (KRaft, combined broker+controller) for dev and tests.

    with LocalBroker() as broker:          # free port, temporary data dir
        use(broker.bootstrap_servers)      # "127.0.0.1:PORT"

    with LocalBroker(sasl_users={"alice": "alice-secret"}) as broker:
        use(broker.sasl_bootstrap_servers) # SASL_PLAINTEXT, mechanism PLAIN, on another port

``start``/``stop``/``status`` back ``cfstream kafka start|stop|status``. The JVM runs detached
(own session), logs to ``<data-dir>/broker.log`` and is recorded in ``<data-dir>/broker.pid``.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from cfstream.dev import jvm, procs
from cfstream.dev.jars import Notify, ensure_jars
from cfstream.errors import ConfigurationError, KafkaUnavailable

DEFAULT_PORT = 9092
DEFAULT_DATA_DIR = Path(".cfstream/kafka")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
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
        users = check_sasl_users(sasl_users if sasl_users is not None else DEFAULT_SASL_USERS)
        listeners += f",{SASL_LISTENER}://{host}:{sasl_port}"
        advertised += f",{SASL_LISTENER}://{host}:{sasl_port}"
        protocols += f",{SASL_LISTENER}:SASL_PLAINTEXT"
        prefix = f"listener.name.{SASL_LISTENER.lower()}"
        jaas = "org.apache.kafka.common.security.plain.PlainLoginModule required " + " ".join(
            f'user_{name}="{password}"' for name, password in users.items()) + ";"
        sasl = f"""\
# Clients may also connect to {SASL_LISTENER} and authenticate with {SASL_MECHANISM}.
sasl.enabled.mechanisms={SASL_MECHANISM}
{prefix}.sasl.enabled.mechanisms={SASL_MECHANISM}
{prefix}.plain.sasl.jaas.config={jaas}
"""
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


def sasl_port_of(data_dir: Path) -> int | None:
    """The SASL listener's port in ``data_dir``'s server.properties (written at every start)."""
    try:
        text = (data_dir / "server.properties").read_text()
    except OSError:
        return None
    match = re.search(rf"^listeners=.*\b{SASL_LISTENER}://[^,:]+:(\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else None


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
    if sasl:
        sasl_users = check_sasl_users(sasl_users if sasl_users is not None
                                      else DEFAULT_SASL_USERS)
    path = Path(data_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    current = status(path)
    if current.running:
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
                f"(pid {current.pid}); stop it first with "
                f"`cfstream kafka stop --data-dir {path}`."
            )
        return current
    procs.remove_pid(path)  # stale: its process is gone
    if not port:  # None or 0: any free port
        port = procs.free_port()
    else:
        _check_free(port, "--port")
    if sasl and sasl_port:
        if sasl_port == port:
            raise KafkaUnavailable(f"The SASL port must differ from the PLAINTEXT port {port}.")
        _check_free(sasl_port, "--sasl-port")
    java = jvm.find_java()
    lib = ensure_jars(notify=notify)
    taken = {port}
    if sasl:
        sasl_port = sasl_port or _free_port_besides(taken)
        taken.add(sasl_port)
    else:
        sasl_port = None
    controller_port = _free_port_besides(taken)
    props = path / "server.properties"
    props.write_text(server_properties(port, controller_port, path, sasl_port=sasl_port,
                                       sasl_users=sasl_users))
    if not (path / "logs" / "meta.properties").exists():
        _format(java, lib, props, path)

    flags, pending = jvm.archive_flags(java, lib)
    cmd = [*jvm.base_command(java, lib), *flags, "kafka.Kafka", str(props)]
    with open(path / procs.LOG_FILE, "a") as log:
        sasl_note = f" sasl_port={sasl_port}" if sasl_port else ""
        log.write(f"{procs.START_MARK} {datetime.now().isoformat(timespec='seconds')} "
                  f"port={port}{sasl_note} -----\n{' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=path, start_new_session=True, close_fds=True,
        )
    pending_str = str(pending) if pending else None
    procs.write_pid(path, procs.PidRecord(proc.pid, port, controller_port, pending_str))
    try:
        _wait_ready(proc, port, path, time.monotonic() + timeout, sasl_port)
    except BaseException:
        _terminate(proc.pid, path, grace=5.0)
        procs.remove_pid(path)
        jvm.promote_archive(pending, keep=False)
        raise
    return BrokerStatus(running=True, data_dir=path, pid=proc.pid, port=port,
                        sasl_port=sasl_port)


def _check_free(port: int, option: str) -> None:
    if procs.port_in_use(port):
        raise KafkaUnavailable(
            f"Port {port} on {procs.HOST} is already in use. Stop whatever listens there, choose "
            f"another port with {option}, or, if it is a Kafka broker, point "
            f"CFSTREAM_BOOTSTRAP_SERVERS at {procs.HOST}:{port} instead of starting one."
        )


def _free_port_besides(taken: set[int]) -> int:
    port = procs.free_port()
    while port in taken:
        port = procs.free_port()
    return port


def stop(data_dir: Path | str = DEFAULT_DATA_DIR, *, timeout: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM the broker of ``data_dir`` (SIGKILL after ``timeout``); False if none ran."""
    path = Path(data_dir).resolve()
    record = procs.read_pid(path)
    if record is None:
        return False
    was_running = procs.is_our_broker(record.pid, path)
    clean = True
    if was_running:
        clean = _terminate(record.pid, path, grace=timeout)
    pending = Path(record.pending_archive) if record.pending_archive else None
    jvm.promote_archive(pending, keep=clean)
    procs.remove_pid(path)
    return was_running


class LocalBroker:
    """A broker for the span of a ``with`` block; a temporary data dir is deleted afterwards.

    ``sasl_users`` (name -> password) also opens a SASL_PLAINTEXT listener (mechanism PLAIN) on
    ``sasl_port`` (None: a free one), at :attr:`sasl_bootstrap_servers`.
    """

    def __init__(
        self, port: int | None = None, data_dir: Path | str | None = None,
        *, sasl_users: Mapping[str, str] | None = None, sasl_port: int | None = None,
        timeout: float = START_TIMEOUT_S,
    ) -> None:
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="cfstream-kafka-")).resolve()
        self.port = port
        self.sasl_users = dict(sasl_users) if sasl_users is not None else None
        self.sasl_port = sasl_port
        self.timeout = timeout
        self.status: BrokerStatus | None = None

    @property
    def bootstrap_servers(self) -> str:
        if self.status is None or self.status.bootstrap_servers is None:
            raise KafkaUnavailable(f"LocalBroker on {self.data_dir} is not started")
        return self.status.bootstrap_servers

    @property
    def sasl_bootstrap_servers(self) -> str:
        if self.status is None or self.status.sasl_bootstrap_servers is None:
            raise KafkaUnavailable(f"LocalBroker on {self.data_dir} has no SASL listener running")
        return self.status.sasl_bootstrap_servers

    def start(self) -> LocalBroker:
        self.status = start(self.port, self.data_dir, sasl_users=self.sasl_users,
                            sasl_port=self.sasl_port, timeout=self.timeout)
        self.port = self.status.port
        self.sasl_port = self.status.sasl_port
        return self

    def stop(self, *, remove_data: bool | None = None) -> None:
        stop(self.data_dir)
        self.status = None
        if self._own_dir if remove_data is None else remove_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def new_cluster_id() -> str:
    """Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding.

    Drawn again when it starts with "-" (1 in 64), as Kafka's own Uuid.randomUuid() does: the
    storage tool would read such an id as an option.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _format(java: jvm.Java, lib: Path, props: Path, data_dir: Path) -> None:
    archive = jvm.class_archive(java, lib)
    cds = [f"-XX:SharedArchiveFile={archive}"] if archive.is_file() else []
    cmd = [*jvm.base_command(java, lib), *cds, "kafka.tools.StorageTool", "format",
           "-t", new_cluster_id(), "-c", str(props)]
    done = subprocess.run(  # noqa: S603 - fixed argv, no shell
        cmd, capture_output=True, text=True, timeout=120, check=False, cwd=data_dir
    )
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        raise KafkaUnavailable(
            f"Formatting Kafka storage in {data_dir} failed (exit {done.returncode}):\n{output}\n"
            "If the data dir holds an old or broken broker, delete it and start again."
        )


def _wait_ready(proc: subprocess.Popen[bytes], port: int, data_dir: Path, deadline: float,
                sasl_port: int | None = None) -> None:
    """Until the broker answers a metadata request with itself in it (and the SASL listener
    accepts connections), or died, or the deadline."""

    def check_exit() -> None:
        if proc.poll() is not None:
            raise KafkaUnavailable(
                f"The Kafka broker exited during start (exit code {proc.returncode}). "
                f"Last lines of {data_dir / procs.LOG_FILE}:\n{procs.log_tail(data_dir)}"
            )

    # Plain TCP first: librdkafka would log every refused connection while the JVM boots.
    while not procs.accepts(port):
        check_exit()
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    # log_level 0: failures surface as exceptions here, not as lines on the user's terminal.
    admin = AdminClient({"bootstrap.servers": f"{procs.HOST}:{port}", "log_level": 0})
    while time.monotonic() < deadline:
        check_exit()
        try:
            if admin.list_topics(timeout=max(0.1, min(2.0, deadline - time.monotonic()))).brokers:
                break
        except KafkaException:
            pass
        time.sleep(0.05)
    else:
        check_exit()
        raise KafkaUnavailable(
            f"The Kafka broker on port {port} did not answer within the start deadline. "
            f"Last lines of {data_dir / procs.LOG_FILE}:\n{procs.log_tail(data_dir)}"
        )
    # Listeners open together; this only covers a SASL port that fails to bind.
    while sasl_port is not None and not procs.accepts(sasl_port):
        check_exit()
        if time.monotonic() > deadline:
            raise KafkaUnavailable(
                f"The Kafka broker's SASL listener on port {sasl_port} did not open within the "
                f"start deadline. Last lines of {data_dir / procs.LOG_FILE}:\n"
                f"{procs.log_tail(data_dir)}"
            )
        time.sleep(0.05)


def _terminate(pid: int, data_dir: Path, grace: float) -> bool:
    """SIGTERM, wait ``grace`` s, then SIGKILL. True if it exited on SIGTERM."""
    if not procs.is_our_broker(pid, data_dir):
        return True
    signal_sent = _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while signal_sent and procs.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not procs.alive(pid):
        return True
    _signal(pid, signal.SIGKILL)
    kill_deadline = time.monotonic() + 10.0
    while procs.alive(pid) and time.monotonic() < kill_deadline:
        time.sleep(0.05)
    if procs.alive(pid):
        raise KafkaUnavailable(f"Kafka broker pid {pid} survived SIGKILL; check it by hand")
    return False


def _signal(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True
