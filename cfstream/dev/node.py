"""One broker node's JVM: format its storage, launch it, wait until it answers, stop or kill it.

The JVM runs detached (its own session), appending to ``<data-dir>/broker.log``.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from cfstream.dev import jvm, procs
from cfstream.errors import KafkaUnavailable

# After SIGKILL, how long the kernel gets to reap the JVM before we call it stuck.
KILL_WAIT_S = 10.0
# A broker that failed to come up gets this long to stop on SIGTERM before SIGKILL.
FAILED_START_GRACE_S = 5.0


@dataclass(frozen=True)
class Ports:
    """A node's listeners: clients (PLAINTEXT), the controller quorum, and SASL if any."""

    port: int
    controller_port: int
    sasl_port: int | None = None


def new_cluster_id() -> str:
    """Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding.

    Drawn again when it starts with "-" (1 in 64), as Kafka's own Uuid.randomUuid() does: the
    storage tool would read such an id as an option.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def is_formatted(data_dir: Path) -> bool:
    return (data_dir / "logs" / "meta.properties").exists()


def format_storage(java: jvm.Java, lib: Path, props: Path, data_dir: Path,
                   cluster_id: str | None = None) -> None:
    """Kafka's storage tool on ``data_dir``, with ``cluster_id`` (a cluster's nodes share one)
    or a new one."""
    archive = jvm.class_archive(java, lib)
    cds = [f"-XX:SharedArchiveFile={archive}"] if archive.is_file() else []
    cmd = [*jvm.base_command(java, lib), *cds, "kafka.tools.StorageTool", "format",
           "-t", cluster_id or new_cluster_id(), "-c", str(props)]
    done = subprocess.run(  # noqa: S603 - fixed argv, no shell
        cmd, capture_output=True, text=True, timeout=120, check=False, cwd=data_dir
    )
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        raise KafkaUnavailable(
            f"Formatting Kafka storage in {data_dir} failed (exit {done.returncode}):\n{output}\n"
            "If the data dir holds an old or broken broker, delete it and start again."
        )


def launch(java: jvm.Java, lib: Path, props: Path, data_dir: Path,
           note: str) -> tuple[subprocess.Popen[bytes], Path | None]:
    """``kafka.Kafka props`` in a session of its own, after a start mark (with ``note``) in
    broker.log; the process and the class archive it is writing, if any (see
    :func:`jvm.promote_archive`)."""
    flags, pending = jvm.archive_flags(java, lib)
    cmd = [*jvm.base_command(java, lib), *flags, "kafka.Kafka", str(props)]
    with open(data_dir / procs.LOG_FILE, "a") as log:
        log.write(f"{procs.START_MARK} {datetime.now().isoformat(timespec='seconds')} "
                  f"{note} -----\n{' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=data_dir, start_new_session=True, close_fds=True,
        )
    return proc, pending


def start_recorded(java: jvm.Java, lib: Path, props: Path, data_dir: Path, ports: Ports,
                   ) -> tuple[subprocess.Popen[bytes], Path | None]:
    """:func:`launch` the node and record it in ``data_dir``'s pid file."""
    sasl_note = f" sasl_port={ports.sasl_port}" if ports.sasl_port else ""
    proc, pending = launch(java, lib, props, data_dir, f"port={ports.port}{sasl_note}")
    procs.write_pid(data_dir, procs.PidRecord(proc.pid, ports.port, ports.controller_port,
                                              str(pending) if pending else None))
    return proc, pending


def forget(pid: int, data_dir: Path, pending: Path | None) -> None:
    """After a failed start: stop the node, remove its pid file, drop its class archive."""
    terminate(pid, data_dir, grace=FAILED_START_GRACE_S)
    procs.remove_pid(data_dir)
    jvm.promote_archive(pending, keep=False)


def wait_ready(proc: subprocess.Popen[bytes], port: int, data_dir: Path, deadline: float,
               sasl_port: int | None = None, brokers: int = 1) -> None:
    """Until the broker answers a metadata request listing ``brokers`` brokers (itself at
    least; in a cluster, all of them registered with the controller quorum's leader) and the
    SASL listener accepts connections; or died, or the deadline."""

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
            metadata = admin.list_topics(timeout=max(0.1, min(2.0, deadline - time.monotonic())))
            if len(metadata.brokers) >= brokers:
                break
        except KafkaException:
            pass
        time.sleep(0.05)
    else:
        check_exit()
        seen = "" if brokers == 1 else f" with all {brokers} brokers of its cluster"
        raise KafkaUnavailable(
            f"The Kafka broker on port {port} did not answer{seen} within the start deadline. "
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


def terminate(pid: int, data_dir: Path, grace: float) -> bool:
    """SIGTERM, wait ``grace`` s, then SIGKILL. True if it exited on SIGTERM."""
    if not procs.is_our_broker(pid, data_dir):
        return True
    signal_sent = _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while signal_sent and procs.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not procs.alive(pid):
        return True
    kill(pid)
    return False


def kill(pid: int) -> None:
    """SIGKILL, as a crash would: no shutdown, storage left as it is. Returns once it is gone."""
    _signal(pid, signal.SIGKILL)
    kill_deadline = time.monotonic() + KILL_WAIT_S
    while procs.alive(pid) and time.monotonic() < kill_deadline:
        time.sleep(0.05)
    if procs.alive(pid):
        raise KafkaUnavailable(f"Kafka broker pid {pid} survived SIGKILL; check it by hand")


def _signal(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True
