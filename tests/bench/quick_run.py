"""Runs ``python -m bench --quick`` on some of the benchmarks, as the smoke tests do: each
benchmark must run to the end and report every row. No figure is asserted (the machine is
noisy; the figures are ratios to read, not to gate on)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The smoke run in three parts that pytest-xdist can run side by side, about 2-2.5 min each
# (one module a part): one replica at a time, replicas failing, replicas restarting.
PARTS = {
    "single": ["submit", "throughput", "timers", "mixed", "pending", "recovery", "e2e",
               "waiting", "after", "worker"],
    "failover": ["failover", "standby"],
    "rolling": ["rolling", "scaling"],
}


def run_quick(kafka_bootstrap: str, out: Path, part: str, timeout: float) -> None:
    names = PARTS[part]
    env = {**os.environ, "CFSTREAM_BOOTSTRAP_SERVERS": kafka_bootstrap}
    run = subprocess.run([sys.executable, "-m", "bench", "--quick", "--no-profile",
                          "--only", ",".join(names), "--out", str(out)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    [report_file] = out.glob("quick-*.json")
    report = json.loads(report_file.read_text())
    assert report["errors"] == {}
    ran = {result["name"]: result["rows"] for result in report["results"]}
    assert set(ran) == set(names)
    assert all(ran.values()), ran
    assert "| benchmark |" in report_file.with_suffix(".md").read_text()


def smoke_test(part: str) -> Callable[[str, Path], None]:
    """The test of one part, for its module (one module a part, so that they run side by
    side)."""

    @pytest.mark.kafka
    @pytest.mark.long
    @pytest.mark.timeout(600)
    def test_quick_benchmarks_run_and_report_every_figure(kafka_bootstrap: str,
                                                          tmp_path: Path) -> None:
        run_quick(kafka_bootstrap, tmp_path, part, timeout=540)

    return test_quick_benchmarks_run_and_report_every_figure
