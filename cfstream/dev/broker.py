"""A real single-node Apache Kafka 4 broker (KRaft, combined broker+controller) for dev and tests.

    with LocalBroker() as broker:          # free port, temporary data dir
        use(broker.bootstrap_servers)      # "127.0.0.1:PORT"

``start``/``stop``/``status`` back ``cfstream kafka start|stop|status``. The JVM runs detached
(own session), logs to ``<data-dir>/broker.log`` and is recorded in ``<data-dir>/broker.pid``.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from cfstream.dev import jvm, procs
from cfstream.dev.jars import Notify, ensure_jars
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

    @property
    def bootstrap_servers(self) -> str | None:
        return f"{procs.HOST}:{self.port}" if self.running and self.port else None


def server_properties(port: int, controller_port: int, data_dir: Path) -> str:
    """The broker's config: one node that is its own controller, everything on 127.0.0.1."""
    host = procs.HOST
    return f"""\
# Written by `cfstream kafka start` at every start: edits here are overwritten.
process.roles=broker,controller
node.id=1
# A static one-voter quorum: the controller port may change between restarts.
controller.quorum.voters=1@{host}:{controller_port}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}
advertised.listeners=PLAINTEXT://{host}:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
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
# Kafka's default, kept: faust and plain consumers may subscribe before a topic exists.
# cfstream creates its own topics explicitly with the partition count it needs.
auto.create.topics.enable=true
# The cleaner's 128 MiB default buffer is heap the dev broker doesn't need.
log.cleaner.dedupe.buffer.size=33554432
"""


def status(data_dir: Path | str = DEFAULT_DATA_DIR) -> BrokerStatus:
    """Whether the broker recorded in ``data_dir`` runs, with its pid and port."""
    path = Path(data_dir).resolve()
    record = procs.read_pid(path)
    if record is None or not procs.is_our_broker(record.pid, path):
        return BrokerStatus(running=False, data_dir=path)
    return BrokerStatus(running=True, data_dir=path, pid=record.pid, port=record.port)


def start(
    port: int | None = DEFAULT_PORT,
    data_dir: Path | str = DEFAULT_DATA_DIR,
    *,
    timeout: float = START_TIMEOUT_S,
    notify: Notify | None = None,
) -> BrokerStatus:
    """Start the broker (``port`` None or 0: any free one); return once it answers metadata.

    Formats ``data_dir`` on first use and reuses it afterwards. Returns the running broker if
    one already runs on this data dir. Raises KafkaUnavailable saying what to do.
    """
    path = Path(data_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    current = status(path)
    if current.running:
        if not port or port == current.port:
            return current
        raise KafkaUnavailable(
            f"A broker for {path} already runs on port {current.port} (pid {current.pid}); "
            f"stop it first with `cfstream kafka stop --data-dir {path}`."
        )
    procs.remove_pid(path)  # stale: its process is gone
    if not port:  # None or 0: any free port
        port = procs.free_port()
    elif procs.port_in_use(port):
        raise KafkaUnavailable(
            f"Port {port} on {procs.HOST} is already in use. Stop whatever listens there, choose "
            "another port with --port, or, if it is a Kafka broker, point "
            f"CFSTREAM_BOOTSTRAP_SERVERS at {procs.HOST}:{port} instead of starting one."
        )
    java = jvm.find_java()
    lib = ensure_jars(notify=notify)
    controller_port = procs.free_port()
    while controller_port == port:
        controller_port = procs.free_port()
    props = path / "server.properties"
    props.write_text(server_properties(port, controller_port, path))
    if not (path / "logs" / "meta.properties").exists():
        _format(java, lib, props, path)

    flags, pending = jvm.archive_flags(java, lib)
    cmd = [*jvm.base_command(java, lib), *flags, "kafka.Kafka", str(props)]
    with open(path / procs.LOG_FILE, "a") as log:
        log.write(f"{procs.START_MARK} {datetime.now().isoformat(timespec='seconds')} "
                  f"port={port} -----\n{' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=path, start_new_session=True, close_fds=True,
        )
    pending_str = str(pending) if pending else None
    procs.write_pid(path, procs.PidRecord(proc.pid, port, controller_port, pending_str))
    try:
        _wait_ready(proc, port, path, time.monotonic() + timeout)
    except BaseException:
        _terminate(proc.pid, path, grace=5.0)
        procs.remove_pid(path)
        jvm.promote_archive(pending, keep=False)
        raise
    return BrokerStatus(running=True, data_dir=path, pid=proc.pid, port=port)


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
    """A broker for the span of a ``with`` block; a temporary data dir is deleted afterwards."""

    def __init__(
        self, port: int | None = None, data_dir: Path | str | None = None,
        *, timeout: float = START_TIMEOUT_S,
    ) -> None:
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="cfstream-kafka-")).resolve()
        self.port = port
        self.timeout = timeout
        self.status: BrokerStatus | None = None

    @property
    def bootstrap_servers(self) -> str:
        if self.status is None or self.status.bootstrap_servers is None:
            raise KafkaUnavailable(f"LocalBroker on {self.data_dir} is not started")
        return self.status.bootstrap_servers

    def start(self) -> LocalBroker:
        self.status = start(self.port, self.data_dir, timeout=self.timeout)
        self.port = self.status.port
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
    """Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


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


def _wait_ready(proc: subprocess.Popen[bytes], port: int, data_dir: Path, deadline: float) -> None:
    """Until the broker answers a metadata request with itself in it, or died, or the deadline."""

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
                return
        except KafkaException:
            pass
        time.sleep(0.05)
    check_exit()
    raise KafkaUnavailable(
        f"The Kafka broker on port {port} did not answer within the start deadline. "
        f"Last lines of {data_dir / procs.LOG_FILE}:\n{procs.log_tail(data_dir)}"
    )


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
