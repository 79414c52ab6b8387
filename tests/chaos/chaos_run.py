"""One ``python -m bench.chaos`` run as a subprocess, for the chaos tests: it starts its own
Kafka, processes and producer, and stops itself within ``--duration-limit``; the summary comes
back as JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from cfstream.dev.services import pythonpath

REPO = Path(__file__).resolve().parents[2]
# Beyond the harness's own limit: its teardown, and the interpreter starting.
GRACE_S = 150


def run_harness(tmp_path: Path, args: list[str], duration_limit: float
                ) -> tuple[dict[str, Any], str, int]:
    """The run's summary, the last lines of its output (for assertion messages), its exit code."""
    summary_path = tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CFSTREAM_")}
    env["PYTHONPATH"] = pythonpath(REPO)
    log = (tmp_path / "harness.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.chaos", *args, "--duration-limit", str(duration_limit),
         "--workdir", str(tmp_path / "run"), "--json-out", str(summary_path)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        code = proc.wait(duration_limit + GRACE_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the harness tears everything down on SIGTERM
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    finally:
        log.close()
    output = (tmp_path / "harness.log").read_text(errors="replace")
    assert summary_path.exists(), f"the harness wrote no summary (exit {code}):\n{output[-4000:]}"
    return json.loads(summary_path.read_text()), output[-6000:], code
