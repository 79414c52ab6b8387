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

# The command as the README has it (the console script: its directory, not the current one,
# heads the module path, unlike `python -m cfstream`).
CFSTREAM = [str(Path(sys.executable).with_name("cfstream"))]
# A task module of the newcomer's own, in the directory the services are started from.
OWN_TASKS = """
import cfstream as cf

@cf.task
def shout(word: str) -> str:
    return word.upper()
"""


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


def console_tasks(ran: int, timeout: float = 60) -> list[dict[str, object]]:
    """The console's per-task rows, once it answers and lists ``ran`` tasks that have run."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            url = f"http://127.0.0.1:{CONSOLE_PORT}/api/snapshot"
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                tasks = json.load(response)["tasks"]
            if sum(bool(row["succeeded"]) for row in tasks) >= ran:
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

    (tmp_path / "mytasks.py").write_text(OWN_TASKS)
    try:
        # The order the issue saw fail: the worker first, then the processor.
        worker = start("worker", "worker", "cfstream.examples.notifications", "mytasks")
        wait_ready(WORKER_HTTP_PORT, worker, logs["worker"])
        processor = start("processor", "processor")
        wait_ready(PROCESSOR_HTTP_PORT, processor, logs["processor"])

        client = cf.Client(cf.Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix))
        try:
            execution = notifications.send_notification.submit_to(client, 1, 7)
            assert execution.result(timeout=60) == "user 1 notified about document 7"
            assert cf.submit("mytasks:shout", ["hi"], client=client).result(timeout=60) == "HI"
        finally:
            client.close()

        start("console", "console")
        tasks = console_tasks(ran=2)
        assert sorted(row["task"] for row in tasks if row["succeeded"]) == [
            notifications.send_notification.name, "mytasks:shout"]

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


def test_a_worker_of_a_module_it_cannot_import_says_so_in_one_line(tmp_path: Path) -> None:
    """Before it reaches for Kafka (none is needed to say so)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CFSTREAM_")}
    env["CFSTREAM_BOOTSTRAP_SERVERS"] = "127.0.0.1:1"
    done = subprocess.run([*CFSTREAM, "worker", "myapp.tasks"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: cannot import 'myapp.tasks': no module named 'myapp' in {tmp_path} or on "
        "PYTHONPATH; run the worker where the module can be imported from, or set PYTHONPATH")
    assert "Traceback" not in done.stderr
