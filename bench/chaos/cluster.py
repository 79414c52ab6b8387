"""The system under test: a local broker, processor replicas and workers as real processes.

Every process is ``python -m cfstream ...`` (:mod:`cfstream.dev.services`) configured only
through ``CFSTREAM_*`` variables. Processes the harness did not kill but that exited are
restarted by :meth:`Cluster.supervise` and reported as crashes.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cfstream.clock import now_ms
from cfstream.dev.broker import LocalBroker
from cfstream.dev.cluster import LocalCluster
from cfstream.dev.services import Service, Services
from cfstream.kafka.groups import Group, Groups
from cfstream.settings import Settings

REPO = Path(__file__).resolve().parent.parent.parent
TASKS_MODULE = "bench.chaos.tasks"
# What a crash report keeps of the crashed process's log.
CRASH_TAIL_LINES = 25
# At the end, everything gets SIGTERM and this long to stop before SIGKILL.
STOP_ALL_TIMEOUT_S = 20.0


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Crash:
    name: str
    returncode: int | None
    ts_ms: int
    log_tail: str


class Cluster:
    """The services of one run, supervised: a service that exits without being killed by the
    harness is a crash, recorded and started again."""

    def __init__(self, settings: Settings, workdir: Path,
                 broker: LocalBroker | LocalCluster) -> None:
        self.settings = settings
        self.broker = broker
        # clean_env: the services' settings come from CFSTREAM_* of the run's settings alone.
        self.services = Services(settings, workdir, import_paths=[REPO],
                                 worker_modules=[TASKS_MODULE], clean_env=True)
        self.down: set[str] = set()  # killed by the harness: left down until start()
        self.crashes: list[Crash] = []
        self.lock = threading.RLock()
        self._groups: Groups | None = None

    # -- processes --------------------------------------------------------------------------

    def add_processor(self, name: str) -> Service:
        with self.lock:
            return self.services.processor(name)

    def add_worker(self, name: str, record_dir: Path, concurrency: int = 8) -> Service:
        with self.lock:
            return self.services.worker(name, concurrency=concurrency,
                                        CHAOS_RECORD_DIR=str(record_dir))

    def start(self, name: str) -> None:
        """Start ``name`` again (after :meth:`kill`)."""
        with self.lock:
            self.services.started[name].start()
            self.down.discard(name)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill ``name`` (the supervisor leaves it down until :meth:`start`)."""
        with self.lock:
            self.down.add(name)
            service = self.services.started[name]
        service.kill(sig)

    def supervise(self) -> None:
        """Restart services that exited without being killed; each one is a crash."""
        with self.lock:
            for service in self.services.started.values():
                if service.name in self.down or service.running:
                    continue
                tail = service.tail(CRASH_TAIL_LINES)
                self.crashes.append(Crash(service.name, service.returncode, now_ms(), tail))
                log(f"CRASH: {service.name} exited with {service.returncode}; restarting. "
                    f"Last lines:\n{tail}")
                service.start()

    def stop_all(self, timeout: float = STOP_ALL_TIMEOUT_S) -> None:
        with self.lock:
            self.down.update(self.services.started)
            self.services.close(timeout)
            if self._groups is not None:
                self._groups.close()

    def kill_all_now(self) -> None:
        """For the watchdog: SIGKILL every child, no waiting (and no lock: it may be held)."""
        for service in list(self.services.started.values()):
            self.down.add(service.name)
            with contextlib.suppress(OSError):
                service.send_signal(signal.SIGKILL)

    # -- broker -----------------------------------------------------------------------------

    def restart_broker(self) -> tuple[int, int]:
        """Stop the broker (SIGTERM) and start it on the same port and data dir."""
        assert isinstance(self.broker, LocalBroker), "a cluster's nodes are restarted one by one"
        port = self.broker.port
        stopped = now_ms()
        self.broker.stop(remove_data=False)
        self.broker.port = port
        self.broker.start()
        assert self.broker.port == port, (self.broker.port, port)
        return stopped, now_ms()

    # -- groups -----------------------------------------------------------------------------

    def groups(self) -> Groups:
        """Reads groups from a child process (librdkafka#4605 aborts the reader when a
        coordinator dies mid-request, which is what this harness makes happen); one for the
        run."""
        if self._groups is None:
            self._groups = Groups(self.settings)
        return self._groups


# The last error describing each group, for the report when a group never settles.
describe_errors: dict[str, str] = {}


def describe_group(groups: Groups, group: str) -> Group | None:
    try:
        return groups.describe(group, 5).result(timeout=10)
    except Exception as exc:  # broker restarting, coordinator moving: the caller polls again
        describe_errors[group] = repr(exc)
        return None


def group_settled(description: Group | None, members: int, topic: str,
                  old_members: set[str] | None = None) -> bool:
    """``members`` members, stable, each assigned some of ``topic``; and (if given) at least one
    member id that is new since ``old_members``."""
    if description is None or len(description.members) != members:
        return False
    if description.state != "STABLE":
        return False
    ids = {m.member_id for m in description.members}
    if old_members is not None and ids <= old_members:
        return False
    return all(any(t == topic for t, _ in m.partitions) for m in description.members)


def member_ids(description: Group | None) -> set[str]:
    return set() if description is None else {m.member_id for m in description.members}

