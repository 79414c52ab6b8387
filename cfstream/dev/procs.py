"""Processes on this machine: the broker's pid file, liveness checks, /proc readings, ports on
the loopback interface, and the tails of log files."""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HOST = "127.0.0.1"
PID_FILE = "broker.pid"
LOG_FILE = "broker.log"
# Each start appends this line to broker.log; error reports show what follows the last one.
START_MARK = "----- cfstream kafka start"


@dataclass(frozen=True)
class PidRecord:
    pid: int
    port: int
    controller_port: int
    pending_archive: str | None = None


def write_pid(data_dir: Path, record: PidRecord) -> None:
    tmp = data_dir / f"{PID_FILE}.tmp"
    tmp.write_text(json.dumps(asdict(record)) + "\n")
    os.replace(tmp, data_dir / PID_FILE)


def read_pid(data_dir: Path) -> PidRecord | None:
    try:
        raw = json.loads((data_dir / PID_FILE).read_text())
        return PidRecord(**raw)
    except (OSError, ValueError, TypeError):
        return None


def remove_pid(data_dir: Path) -> None:
    (data_dir / PID_FILE).unlink(missing_ok=True)


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie child of this process is reaped and counts as gone."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            # The state letter follows the parenthesised command name, which may contain spaces.
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_our_broker(pid: int, data_dir: Path) -> bool:
    """Whether ``pid`` is a running ``kafka.Kafka`` JVM started on ``data_dir``'s server.properties.

    Guards against signalling an unrelated process that reused a stale pid.
    """
    if not alive(pid):
        return False
    try:
        args = _arguments(pid)
    except FileNotFoundError:
        # No /proc (not Linux): trust the pid file rather than refuse to stop anything.
        return not Path("/proc/self").exists()
    except OSError:
        return False
    decoded = [a.decode(errors="replace") for a in args]
    # Its config file lies in data_dir: a cluster's node-1 is not its node-10 nor the cluster.
    inside = f"{data_dir}{os.sep}"
    return "kafka.Kafka" in decoded and any(a.startswith(inside) for a in decoded)


# How long a live process may show no arguments: just after exec (see _arguments).
ARGUMENTS_WAIT_S = 1.0


def _arguments(pid: int) -> list[bytes]:
    """``pid``'s command line. Popen returns once exec has closed its pipe, and the kernel sets
    the new image's arguments after that: a process started a moment ago may show none yet
    (read so, a broker whose start failed at once would pass for a stranger, and be left
    running when the start cleans up)."""
    path = Path(f"/proc/{pid}/cmdline")
    deadline = time.monotonic() + ARGUMENTS_WAIT_S
    while not (raw := path.read_bytes()) and alive(pid) and time.monotonic() < deadline:
        time.sleep(0.005)
    return raw.split(b"\0")


# Where free_port() looks first: below the kernel's ephemeral range (see free_port).
LISTEN_PORTS_FROM = 10_000


def free_port() -> int:
    """A port free now (another process may still take it before we do), outside the range the
    kernel hands out as the local ports of outgoing connections. A service started again on its
    old port (a cluster node: its peers know it there) found that port taken by some client's
    connection while it was down, when the port had come from that range."""
    low = ephemeral_ports()[0]
    for _ in range(200 if low > LISTEN_PORTS_FROM + 1_000 else 0):
        port = random.randrange(LISTEN_PORTS_FROM, low)  # noqa: S311 - not a secret
        if not port_in_use(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # no room below: any port
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections (Linux's default when
    it cannot be read)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the JVM does on Linux, so a port in TIME_WAIT after a stop still counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def accepts(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def proc_status_kib(pid: int, field_name: str) -> int | None:
    """A ``VmRSS``/``VmHWM``-style line of /proc/PID/status, in KiB; None without one."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def last_lines(path: Path, lines: int, since: str | None = None) -> str | None:
    """The last ``lines`` lines of the text file ``path``; with ``since``, only of those after
    the last line holding it. None if the file cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    if since is not None and since in text:
        text = text.rsplit(since, 1)[1].partition("\n")[2]
    return "\n".join(text.splitlines()[-lines:])


def log_tail(data_dir: Path, lines: int = 30) -> str:
    """The last lines the broker wrote since the latest start."""
    tail = last_lines(data_dir / LOG_FILE, lines, since=START_MARK)
    if tail is None:
        return "(no broker.log)"
    return tail or "(broker.log is empty)"
