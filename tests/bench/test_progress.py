"""The benchmarks' progress lines (bench.env.Progress): counts, share and rate on stderr.

Run in a subprocess from the repository root, as `python -m bench` runs: here `bench` would be
this test folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def stderr_of(script: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", f"from bench import env\n{script}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    return out.stderr.splitlines()


def test_a_long_phase_logs_how_far_it_got_and_where_it_ended() -> None:
    lines = stderr_of('env.PROGRESS_INTERVAL = 0.0\n'
                      'progress = env.Progress("loading", 2_000, "calls")\n'
                      'progress(500)\nprogress(2_000)\nprogress.finish()')
    assert len(lines) == 3
    assert "loading: 500 of 2,000 calls (25%), " in lines[0]
    assert all("loading: 2,000 of 2,000 calls (100%), " in line for line in lines[1:])
    assert all(line.startswith("[bench ") and line.endswith("/s") for line in lines)


def test_a_short_phase_says_nothing() -> None:
    assert stderr_of('progress = env.Progress("loading", 10)\n'
                     'progress(5)\nprogress(10)\nprogress.finish()') == []
