"""cfstream's own processes, for the tests, the benchmarks and the chaos harness.

Each service is ``python -m cfstream ARGS`` (or another command) configured only through
``CFSTREAM_*`` variables, the way a deployment runs it, appending its output to
``<workdir>/<name>.log``::

    services = Services(settings, workdir, import_paths=[tasks_dir], worker_modules=["my_tasks"])
    services.processor()
    services.worker(concurrency=4)
    ...
    services.close()
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from cfstream.clock import now_ms
from cfstream.dev import procs
from cfstream.dev.jars import Notify
from cfstream.settings import Settings

CFSTREAM = (sys.executable, "-m", "cfstream")
# Each start appends this line to the service's log; tail() shows what follows the last one.
START_MARK = "----- cfstream.dev.services: start"
# Shorter than a deployment's default, so a test's teardown does not wait on in-flight calls.
SHUTDOWN_TIMEOUT_S = 10
# SIGTERM to exit: the service's own shutdown timeout plus room to leave its groups.
STOP_TIMEOUT_S = 30.0
# After SIGKILL, how long the kernel gets to reap the process before we give up on it.
KILL_WAIT_S = 10.0
# A cold processor joins its group, creates its changelog and restores before it is ready.
READY_TIMEOUT_S = 180.0
# While wait_ready() waits, it says so this often (to ``notify``).
NOTICE_INTERVAL_S = 5.0


def pythonpath(*entries: Path | str) -> str:
    """``entries`` first, then this process's own PYTHONPATH, as one PYTHONPATH value."""
    return os.pathsep.join(
        str(p) for p in [*entries, os.environ.get("PYTHONPATH", "")] if str(p))


class Service:
    """One subprocess, started (and started again) with the same command, environment and log."""

    def __init__(self, name: str, command: Sequence[str], env: Mapping[str, str],
                 log_path: Path, cwd: Path, notify: Notify | None = None) -> None:
        self.name = name
        self.command = list(command)
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.notify = notify
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def http_port(self) -> int | None:
        """Where its HTTP server (health, metrics) listens; None for CFSTREAM_HTTP_PORT=0."""
        return int(self.env.get("CFSTREAM_HTTP_PORT", "0")) or None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code of its last run; None while it runs or if it never ran."""
        return None if self.proc is None else self.proc.poll()

    def start(self) -> Service:
        """Start the process, again if it ran before; RuntimeError while it still runs."""
        if self.running:
            raise RuntimeError(f"{self.name} already runs (pid {self.pid})")
        with self.log_path.open("ab") as log:
            newline = "\n" if log.tell() else ""
            log.write(f"{newline}{START_MARK} #{self.starts + 1} at {now_ms()} -----\n".encode())
            log.flush()
            # A session of its own, as a service on a host has a cgroup of its own (a systemd
            # unit, a container): with autogroups the kernel shares the CPU between sessions
            # first, so services started from one session would share one group's share, and a
            # busy worker would take the processor's (bench/results/mixed-ab-sessions.md). A
            # terminal's Ctrl-C or hang-up no longer reaches it: close() stops it.
            self.proc = subprocess.Popen(  # noqa: S603 - our own command, no shell
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.cwd, start_new_session=True)
        self.starts += 1
        return self

    def restart(self, timeout: float = STOP_TIMEOUT_S) -> Service:
        self.stop(timeout)
        return self.start()

    def send_signal(self, sig: int) -> bool:
        """Send ``sig`` if it runs; whether it did."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        self.proc.send_signal(sig)
        return True

    def wait(self, timeout: float | None = None) -> int | None:
        """Its exit code; None if it still runs after ``timeout`` seconds, or never ran."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def wait_or_kill(self, timeout: float) -> int | None:
        """Its exit code, SIGKILLing it if it still runs after ``timeout`` seconds."""
        code = self.wait(timeout)
        if code is None and self.send_signal(signal.SIGKILL):
            code = self.wait(KILL_WAIT_S)
        return code

    def kill(self, sig: int = signal.SIGKILL, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """Send ``sig``, then as :meth:`wait_or_kill`."""
        self.send_signal(sig)
        return self.wait_or_kill(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, as Kubernetes stops a pod; SIGKILL after ``timeout`` seconds."""
        return self.kill(signal.SIGTERM, timeout)

    def readyz(self) -> int | None:
        """/readyz's status; None while it does not answer."""
        if self.http_port is None:
            raise RuntimeError(f"{self.name} serves no HTTP (CFSTREAM_HTTP_PORT=0)")
        url = f"http://{procs.HOST}:{self.http_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (OSError, ValueError):
            return None

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Seconds until /readyz answered 200; RuntimeError if it exited or timed out."""
        started = said = time.monotonic()
        while (now := time.monotonic()) - started < timeout:
            if not self.running:
                raise RuntimeError(f"{self.name} exited with {self.returncode}: {self.tail()}")
            if self.readyz() == 200:
                return time.monotonic() - started
            if self.notify is not None and now - said >= NOTICE_INTERVAL_S:
                said = now
                self.notify(f"{self.name}: not ready yet after {now - started:.0f}s (restoring?)")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready within {timeout}s: {self.tail()}")

    def rss_kib(self) -> int | None:
        return procs.proc_status_kib(self.pid, "VmRSS")

    def hwm_kib(self) -> int | None:
        """Its peak resident memory so far."""
        return procs.proc_status_kib(self.pid, "VmHWM")

    def log(self) -> str:
        """Everything it wrote, over all its starts."""
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 15) -> str:
        """The last lines it wrote since its latest start."""
        tail = procs.last_lines(self.log_path, lines, since=START_MARK)
        return "(no log)" if tail is None else tail


class Services:
    """Services on the topics of ``settings``, by name; :meth:`close` stops them all.

    ``import_paths`` go first on their PYTHONPATH (where task modules live), ``worker_modules``
    are what :meth:`worker` imports unless told otherwise. ``serve_http`` gives each service a
    free port for its HTTP server (health, metrics), for :meth:`Service.readyz`; without it
    there is none (CFSTREAM_HTTP_PORT=0). ``clean_env`` drops this process's own ``CFSTREAM_*``
    variables, so the services see the settings' alone. ``notify`` hears wait_ready() waiting.
    """

    def __init__(self, settings: Settings, workdir: Path, *,
                 import_paths: Sequence[Path | str] = (), worker_modules: Sequence[str] = (),
                 serve_http: bool = False, clean_env: bool = False,
                 notify: Notify | None = None) -> None:
        self.settings = settings
        self.workdir = workdir
        self.import_paths = list(import_paths)
        self.worker_modules = list(worker_modules)
        self.serve_http = serve_http
        self.clean_env = clean_env
        self.notify = notify
        self.started: dict[str, Service] = {}
        """The services started and not stopped through :meth:`stop`, by name."""

    def env(self, **extra: str) -> dict[str, str]:
        """A service's environment: this process's, the settings' ``CFSTREAM_*``, then
        ``extra``."""
        env = {k: v for k, v in os.environ.items()
               if not (self.clean_env and k.startswith("CFSTREAM_"))}
        env.update({
            **self.settings.to_env(),
            "CFSTREAM_HTTP_PORT": "0",
            "CFSTREAM_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT_S),
            "PYTHONPATH": pythonpath(*self.import_paths),
            # So that a log read while the service runs holds all it printed.
            "PYTHONUNBUFFERED": "1",
        })
        env.update(extra)
        return env

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def log(self, name: str) -> str:
        """Everything ``name`` wrote, even after :meth:`stop`."""
        return self.log_path(name).read_text(errors="replace")

    def start(self, name: str, args: Sequence[str], command: Sequence[str] = CFSTREAM,
              **env: str) -> Service:
        """``command + args`` (``python -m cfstream`` by default) as service ``name``."""
        if name in self.started and self.started[name].running:
            raise RuntimeError(f"a service named {name} already runs")
        http = {"CFSTREAM_HTTP_PORT": str(procs.free_port())} if self.serve_http else {}
        service = Service(name, [*command, *args], self.env(**{**http, **env}),
                          self.log_path(name), self.workdir, self.notify)
        self.started[name] = service
        return service.start()

    def processor(self, name: str = "processor", state_dir: Path | None = None,
                  **env: str) -> Service:
        """A processor replica; its RocksDB state in ``state_dir`` (default
        ``<workdir>/state-<name>``)."""
        state = state_dir or self.workdir / f"state-{name}"
        return self.start(name, ["processor"], CFSTREAM_STATE_DIR=str(state), **env)

    def worker(self, name: str = "worker", modules: Sequence[str] | None = None,
               concurrency: int | None = None, **env: str) -> Service:
        """A worker of ``modules`` (default: :attr:`worker_modules`); ``concurrency`` None:
        cfstream's default."""
        if concurrency is not None:
            env["CFSTREAM_WORKER_CONCURRENCY"] = str(concurrency)
        chosen = self.worker_modules if modules is None else modules
        return self.start(name, ["worker", *chosen], **env)

    def stop(self, name: str, sig: int = signal.SIGTERM,
             timeout: float = STOP_TIMEOUT_S) -> int | None:
        """Stop ``name`` with ``sig`` (SIGKILL after ``timeout``) and forget it; its exit code."""
        return self.started.pop(name).kill(sig, timeout)

    def close(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop every service at once: SIGTERM to all, SIGKILL to any left after ``timeout``;
        then forget them."""
        services = list(self.started.values())
        for service in services:
            service.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for service in services:
            service.wait_or_kill(max(0.0, deadline - time.monotonic()))
        self.started.clear()
