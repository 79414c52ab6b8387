"""The quick benchmark run, as a smoke test: every benchmark runs to the end. No figure is
asserted (the machine is noisy; the figures are ratios to read, not to gate on)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.long]

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_quick_benchmarks_run_and_report_every_figure(kafka_bootstrap: str,
                                                      tmp_path: Path) -> None:
    env = {**os.environ, "CFSTREAM_BOOTSTRAP_SERVERS": kafka_bootstrap}
    out = subprocess.run([sys.executable, "-m", "bench", "--quick", "--no-profile",
                          "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=840)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "quick.json").read_text())
    assert report["errors"] == {}
    ran = {result["name"]: result["rows"] for result in report["results"]}
    assert set(ran) == {"submit", "throughput", "timers", "pending", "recovery", "e2e",
                        "failover", "scaling", "rolling", "waiting", "after", "standby",
                        "worker", "mixed"}
    assert all(ran.values()), ran
    assert "| benchmark |" in (tmp_path / "quick.md").read_text()
