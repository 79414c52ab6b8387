"""The supervisor of cfstream's own processes, on plain Python children (no broker needed)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from cfstream.dev.services import Service, Services
from cfstream.settings import Settings

PYTHON = (sys.executable, "-c")
# Says it is up, then waits to be stopped; with IGNORE_TERM it ignores SIGTERM.
SLEEPER = """
import os, signal, time
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("up", flush=True)
time.sleep(60)
"""


@pytest.fixture
def services(tmp_path: Path) -> Services:
    settings = Settings(bootstrap_servers="127.0.0.1:1", topic_prefix="svc")
    return Services(settings, tmp_path, import_paths=[tmp_path / "tasks"])


def wait_for_output(service: Service, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while text not in service.tail():
        assert service.running, service.log()
        assert time.monotonic() < deadline, service.log()
        time.sleep(0.02)


def test_the_environment_comes_from_the_settings(services: Services, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFSTREAM_STATE_DIR", "/inherited")
    env = services.env(EXTRA="1")
    assert env["CFSTREAM_BOOTSTRAP_SERVERS"] == "127.0.0.1:1"
    assert env["CFSTREAM_TOPIC_PREFIX"] == "svc"
    assert env["CFSTREAM_HTTP_PORT"] == "0" and env["EXTRA"] == "1"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path / "tasks")
    assert env["CFSTREAM_STATE_DIR"] == "/inherited"
    services.clean_env = True
    assert "CFSTREAM_STATE_DIR" not in services.env()


def test_a_service_starts_again_and_its_tail_is_its_latest_run(services: Services) -> None:
    service = services.start("hello", ["print('hello')"], command=PYTHON)
    assert service.wait(20) == 0
    service.start()
    assert service.wait(20) == 0
    assert service.starts == 2
    assert services.log("hello").count("hello\n") == 2
    assert service.tail() == "hello"


def test_stop_kills_what_ignores_sigterm_and_close_stops_everything(
        services: Services) -> None:
    stubborn = services.start("stubborn", [SLEEPER], command=PYTHON, IGNORE_TERM="1")
    polite = services.start("polite", [SLEEPER], command=PYTHON)
    wait_for_output(stubborn, "up")
    wait_for_output(polite, "up")
    with pytest.raises(RuntimeError, match="already runs"):
        services.start("polite", [SLEEPER], command=PYTHON)
    services.close(timeout=1)
    assert stubborn.returncode == -signal.SIGKILL
    assert polite.returncode == -signal.SIGTERM
    assert services.started == {}


def test_serve_http_gives_each_service_a_port_of_its_own(services: Services) -> None:
    quiet = services.start("quiet", [SLEEPER], command=PYTHON)
    services.serve_http = True
    served = [services.start(f"served-{i}", [SLEEPER], command=PYTHON) for i in range(2)]
    try:
        assert quiet.http_port is None
        with pytest.raises(RuntimeError, match="serves no HTTP"):
            quiet.readyz()
        ports = {s.http_port for s in served}
        assert None not in ports and len(ports) == 2
        assert served[0].readyz() is None  # nothing answers there
    finally:
        services.close(timeout=5)


def test_each_service_runs_in_a_session_of_its_own(services: Services) -> None:
    """As units of a host's service manager do: the kernel then shares the CPU between the
    services, not between this process's session and the rest (bench/mixed)."""
    started = [services.start(f"own-{i}", [SLEEPER], command=PYTHON) for i in range(2)]
    try:
        for service in started:
            wait_for_output(service, "up")
        sessions = {os.getsid(service.pid) for service in started}
        assert sessions == {service.pid for service in started}
        assert os.getsid(0) not in sessions
    finally:
        services.close(timeout=5)
