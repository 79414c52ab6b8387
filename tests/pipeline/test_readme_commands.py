"""The README's "Run the services", as a newcomer types them: default settings, one host.

Only the broker's address and a topic prefix of the test's own are set (docs/operations.md, "An
existing cluster" path); ports, state dir and everything else are the defaults. A processor and a worker
then serve /readyz side by side, run the seed example, and a second worker on the same host says
in one line which setting to change. The console runs beside them with its defaults too, shows
the example's task, and a second console says which setting to change.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

import cfstream as cf
from cfstream.examples import notifications
from cfstream.settings import CONSOLE_PORT, PROCESSOR_HTTP_PORT, WORKER_HTTP_PORT

pytestmark = pytest.mark.kafka

CFSTREAM = [sys.executable, "-m", "cfstream"]


def readyz(port: int) -> int | None:
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while readyz(port) != 200:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, f"no /readyz 200 on {port}"
        time.sleep(0.2)


def console_tasks(timeout: float = 60) -> list[dict[str, object]]:
    """The console's per-task rows, once it answers and lists a task that has run."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            url = f"http://127.0.0.1:{CONSOLE_PORT}/api/snapshot"
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                tasks = json.load(response)["tasks"]
            if any(row["succeeded"] for row in tasks):
                return list(tasks)
        except OSError:
            pass
        assert time.monotonic() < deadline, f"the console on {CONSOLE_PORT} shows no run"
        time.sleep(0.2)


def test_the_readme_services_run_side_by_side_with_their_defaults(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = f"readme-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CFSTREAM_")}
    env.update(CFSTREAM_BOOTSTRAP_SERVERS=kafka_bootstrap, CFSTREAM_TOPIC_PREFIX=prefix)
    subprocess.run([*CFSTREAM, "topics", "create"], env=env, cwd=tmp_path, check=True,
                   capture_output=True, timeout=120)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {name: tmp_path / f"{name}.log"
            for name in ("processor", "worker", "second", "console", "second-console")}

    def start(name: str, *args: str) -> subprocess.Popen[bytes]:
        with logs[name].open("wb") as out:
            procs[name] = subprocess.Popen([*CFSTREAM, *args], env=env, cwd=tmp_path,
                                           stdout=out, stderr=subprocess.STDOUT)
        return procs[name]

    try:
        # The order the issue saw fail: the worker first, then the processor.
        worker = start("worker", "worker", "cfstream.examples.notifications")
        wait_ready(WORKER_HTTP_PORT, worker, logs["worker"])
        processor = start("processor", "processor")
        wait_ready(PROCESSOR_HTTP_PORT, processor, logs["processor"])

        client = cf.Client(cf.Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix))
        try:
            execution = notifications.send_notification.submit_to(client, 1, 7)
            assert execution.result(timeout=60) == "user 1 notified about document 7"
        finally:
            client.close()

        start("console", "console")
        tasks = console_tasks()
        assert [row["task"] for row in tasks if row["succeeded"]] == [
            notifications.send_notification.name]

        for name, port, setting in [("second", WORKER_HTTP_PORT, "CFSTREAM_HTTP_PORT"),
                                    ("second-console", CONSOLE_PORT, "CFSTREAM_CONSOLE_PORT")]:
            args = ("console",) if name == "second-console" else (
                "worker", "cfstream.examples.notifications")
            assert start(name, *args).wait(60) == 1
            lines = logs[name].read_text().strip().splitlines()
            assert lines[-1].startswith(f"error: port {port} is already in use")
            assert setting in lines[-1]
            assert "Traceback" not in logs[name].read_text()
        assert (tmp_path / ".cfstream" / "state").is_dir()  # the default state dir
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in procs.items():
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise AssertionError(f"{name} did not stop on SIGTERM") from None
    assert procs["processor"].returncode == 0, logs["processor"].read_text()[-2000:]
    assert procs["worker"].returncode == 0, logs["worker"].read_text()[-2000:]
    assert procs["console"].returncode == 0, logs["console"].read_text()[-2000:]
