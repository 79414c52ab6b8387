"""The system under test: a local broker, processor replicas and workers as real processes.

Every process is ``python -m cfstream ...`` configured only through ``CFSTREAM_*`` variables.
Processes the harness did not kill but that exited are restarted by :meth:`Cluster.supervise` and
reported as crashes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from cfstream.dev.broker import LocalBroker
from cfstream.kafka.config import admin_config
from cfstream.settings import Settings

REPO = Path(__file__).resolve().parent.parent.parent
CFSTREAM = [sys.executable, "-m", "cfstream"]
TASKS_MODULE = "bench.chaos.tasks"


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Service:
    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    expected_down: bool = False
    starts: int = 0


@dataclass
class Crash:
    name: str
    returncode: int | None
    ts_ms: int
    log_tail: str


@dataclass
class Cluster:
    settings: Settings
    workdir: Path
    broker: LocalBroker
    processor_env: dict[str, str] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)
    crashes: list[Crash] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)

    # -- processes --------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CFSTREAM_")}
        env.update({
            **self.settings.to_env(),
            "CFSTREAM_HTTP_PORT": "0",
            "CFSTREAM_SHUTDOWN_TIMEOUT": "10",
            "PYTHONPATH": os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p),
            "PYTHONUNBUFFERED": "1",
        })
        env.update(extra)
        return env

    def add_processor(self, name: str) -> Service:
        state = self.workdir / f"state-{name}"
        return self._add(name, ["processor"], CFSTREAM_STATE_DIR=str(state),
                         **self.processor_env)

    def add_worker(self, name: str, record_dir: Path, concurrency: int = 8) -> Service:
        return self._add(name, ["worker", TASKS_MODULE], CHAOS_RECORD_DIR=str(record_dir),
                         CFSTREAM_WORKER_CONCURRENCY=str(concurrency))

    def _add(self, name: str, args: list[str], **env: str) -> Service:
        service = Service(name, args, self.env(**env), self.workdir / f"{name}.log")
        self.services[name] = service
        self.start(name)
        return service

    def start(self, name: str) -> None:
        with self.lock:
            service = self.services[name]
            with service.log_path.open("ab") as out:
                out.write(f"\n----- chaos: start #{service.starts + 1} at {now_ms()}\n".encode())
                out.flush()
                service.proc = subprocess.Popen(
                    CFSTREAM + service.args, env=service.env, stdout=out,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir)
            service.starts += 1
            service.expected_down = False

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill ``name`` (the supervisor leaves it down until :meth:`start`)."""
        with self.lock:
            service = self.services[name]
            service.expected_down = True
            proc = service.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def supervise(self) -> None:
        """Restart services that exited without being killed; each one is a crash."""
        with self.lock:
            for service in self.services.values():
                proc = service.proc
                if service.expected_down or proc is None or proc.poll() is None:
                    continue
                tail = _tail(service.log_path)
                self.crashes.append(Crash(service.name, proc.returncode, now_ms(), tail))
                log(f"CRASH: {service.name} exited with {proc.returncode}; restarting. "
                    f"Last lines:\n{tail}")
                self.start(service.name)

    def stop_all(self, timeout: float = 20.0) -> None:
        with self.lock:
            procs = [s.proc for s in self.services.values()]
            for service in self.services.values():
                service.expected_down = True
        for proc in procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            if proc is None:
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass

    def kill_all_now(self) -> None:
        """For the watchdog: SIGKILL every child, no waiting."""
        for service in list(self.services.values()):
            service.expected_down = True
            proc = service.proc
            if proc is not None and proc.poll() is None:
                try:
                    proc.kill()
                except OSError:
                    pass

    # -- broker -----------------------------------------------------------------------------

    def restart_broker(self) -> tuple[int, int]:
        """Stop the broker (SIGTERM) and start it on the same port and data dir."""
        port = self.broker.port
        stopped = now_ms()
        self.broker.stop(remove_data=False)
        self.broker.port = port
        self.broker.start()
        assert self.broker.port == port, (self.broker.port, port)
        return stopped, now_ms()

    # -- groups -----------------------------------------------------------------------------

    def admin(self) -> AdminClient:
        config = admin_config(self.settings)
        config["log_level"] = 0
        return AdminClient(config)


# The last error describing each group, for the report when a group never settles.
describe_errors: dict[str, str] = {}


def describe_group(admin: AdminClient, group: str) -> Any | None:
    try:
        return admin.describe_consumer_groups([group], request_timeout=5)[group].result(
            timeout=10)
    except Exception as exc:  # broker restarting, coordinator moving: the caller polls again
        describe_errors[group] = repr(exc)
        return None


def group_settled(description: Any, members: int, topic: str,
                  old_members: set[str] | None = None) -> bool:
    """``members`` members, stable, each assigned some of ``topic``; and (if given) at least one
    member id that is new since ``old_members``."""
    if description is None or len(description.members) != members:
        return False
    if str(getattr(description.state, "name", description.state)).upper() != "STABLE":
        return False
    ids = {m.member_id for m in description.members}
    if old_members is not None and ids <= old_members:
        return False
    for m in description.members:
        assignment = m.assignment.topic_partitions if m.assignment else []
        if not any(tp.topic == topic for tp in assignment):
            return False
    return True


def member_ids(description: Any) -> set[str]:
    return set() if description is None else {m.member_id for m in description.members}


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
