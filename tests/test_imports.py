"""Imports go one way (docs/architecture.md): a process that submits and waits never loads the
services, and the scheduling rules load no Kafka client."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cfstream as cf

PACKAGE = Path(cf.__file__).parent

SUBMITTING = """
import datetime as dt
import cfstream as cf

@cf.task(delay=dt.timedelta(minutes=10), defer=True, retries=2)
def send_reminder(reminder_id: int) -> None: ...

execution = send_reminder.submit(1)
cf.submit("app.tasks:charge", [1], delay=5, defer_key="c")
assert execution.status(timeout=30) == "unknown"  # reads the events topic too
"""


@pytest.mark.kafka
def test_submitting_and_waiting_load_no_service_code(settings: cf.Settings) -> None:
    probe = f"{SUBMITTING}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, **settings.to_env()}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    assert {"cfstream.task", "cfstream.client", "cfstream.events.waiting"} <= loaded
    services = ("processor", "worker", "scheduling", "console", "dev", "observability")
    assert sorted(m for m in loaded if m.startswith(tuple(f"cfstream.{p}" for p in services))) \
        == []


def imported_by(module: str) -> set[str]:
    """The modules ``module``'s source imports (absolute names, relative ones resolved)."""
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = path.with_suffix("") / "__init__.py"
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if not node.level else \
                ".".join(module.split(".")[:-node.level] + [node.module])
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


def test_the_scheduling_rules_load_no_kafka_client() -> None:
    """Everything the rules import, transitively within cfstream (the package's own
    ``__init__``, the user's API, aside), is plain Python."""
    seen: set[str] = set()
    todo = ["cfstream.scheduling.rules", "cfstream.scheduling.backlog"]
    outside: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in imported_by(module):
            if name.startswith("cfstream."):
                if (PACKAGE.parent / (name.replace(".", "/") + ".py")).exists() or \
                        (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists():
                    todo.append(name)
            else:
                outside.add(name.split(".")[0])
    assert "cfstream.wire" in seen
    assert not outside & {"confluent_kafka", "rocksdict"}, outside


# OpenTelemetry made unimportable, as without cfstream[otel] (the dev extra installs it): a None
# in sys.modules makes its import fail and importlib.util.find_spec find nothing.
WITHOUT_OTEL = """
import sys
sys.modules["opentelemetry"] = None
"""


@pytest.mark.kafka
def test_without_opentelemetry_submit_and_the_services_import_nothing_of_it(
        settings: cf.Settings) -> None:
    probe = f"""{WITHOUT_OTEL}
{SUBMITTING}
import os
os.environ["OTEL_TRACES_EXPORTER"] = "otlp"  # asked for, but not installed: a warning, no spans
from cfstream.processor import loop, run as processor_run  # run imports loop when it runs
from cfstream.worker import run as worker_run
from cfstream.tracing.setup import setup_tracing
assert setup_tracing("x") is None and worker_run.spans(cf.Settings()) is None
import json
print(json.dumps(sorted(name for name, module in sys.modules.items() if module is not None)))
"""
    env = {**os.environ, **settings.to_env()}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    assert {"cfstream.task", "cfstream.processor.loop", "cfstream.worker.loop"} <= loaded
    assert [m for m in loaded if m.split(".")[0] == "opentelemetry"] == []
    assert "cfstream.tracing.spans" not in loaded


def test_a_process_that_loaded_no_opentelemetry_submits_without_loading_it() -> None:
    """Installed (as with the dev extra) but not loaded by the program: submit leaves it so."""
    probe = """
import sys
import cfstream as cf
from cfstream.tracing import submitting
assert submitting("t:f", "id", None, cf.Settings()) is None
print([m for m in sys.modules if m.startswith("opentelemetry") or m == "cfstream.tracing.spans"])
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]"
