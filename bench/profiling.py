"""Sampling a running cfstream process with py-spy (``pip install py-spy``), if it is installed.

py-spy attaches from outside (no change to the process) and writes collapsed stacks; the report
keeps the frames where the samples are spent: by self time (the innermost frame) and by total
time (every function on the stack, once per sample).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench import env


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    """``idle``: blocked threads too (``--idle --threads``, with line numbers), for a process
    that spends its time waiting (in a poll, an Event, a metadata request), which py-spy leaves
    out by default."""

    def __init__(self, output: Path, rate: int = 100, idle: bool = False) -> None:
        self.output = output
        self.rate = rate
        self.idle = idle
        self.proc: subprocess.Popen[bytes] | None = None
        self.error: str | None = None
        self.binary = py_spy()
        if self.binary is None:
            self.error = "py-spy not installed (pip install py-spy)"

    def start(self, pid: int) -> None:
        if self.binary is None:
            return
        how = ["--idle", "--threads"] if self.idle else ["--nolineno"]
        self.proc = subprocess.Popen(
            [self.binary, "record", "--pid", str(pid), "--format", "raw", *how,
             "--rate", str(self.rate), "--nonblocking", "--output", str(self.output)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.output.exists():
            self.error = f"py-spy wrote nothing: {err.decode(errors='replace')[-300:]}"

    def report(self, top: int = 15) -> dict[str, Any]:
        if self.error is not None or not self.output.exists():
            return {"error": self.error or "not run"}
        return summarize(self.output.read_text(errors="replace"), top)


def short_frame(frame: str) -> str:
    """``func (/long/path/site-packages/pkg/mod.py)`` -> ``func (pkg/mod.py)``."""
    if " (" not in frame:
        return frame
    func, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{func} ({where})"


# Frames every sample of the main thread passes through (entry points, the event loop itself):
# they say nothing about where the time goes, so the "total" list leaves them out.
_PLUMBING = ("(<frozen runpy>)", "(typer/", "(asyncio/base_events.py)", "(mode/worker.py)",
             "(asyncio/events.py)", "(mode/services.py)",
             "(cfstream/cli.py)", "(cfstream/__main__.py)", "(threading.py)",
             "(cfstream/processor/run.py)")


def summarize(collapsed: str, top: int = 15) -> dict[str, Any]:
    self_time: Counter[str] = Counter()
    total_time: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short_frame(f) for f in stack.split(";")]
        # The first frame is the thread ("process 123:..." / "thread (0x..)"): not code.
        code = [f for f in frames if " (" in f and not f.startswith(("process ", "thread "))]
        if not code:
            continue
        samples += count
        self_time[code[-1]] += count
        for frame in set(code):
            if not any(marker in frame for marker in _PLUMBING):
                total_time[frame] += count
    if not samples:
        return {"error": "no samples"}

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[frame, round(100 * n / samples, 1)] for frame, n in counter.most_common(top)]

    env.log(f"profile: {samples} samples")
    return {"samples": samples, "self_pct": share(self_time), "total_pct": share(total_time)}


def by_thread(collapsed: str) -> dict[str, Any]:
    """The profile of each thread: named by its first frame of code past ``threading.py`` (its
    target), with its share of the samples."""
    stacks: dict[str, list[str]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if " (" in f
                  and not f.startswith(("process ", "thread "))]
        entry = next((f for f in frames if "threading.py" not in f and "<frozen" not in f
                      and "runpy" not in f), "?")
        if not any("threading.py" in f for f in frames[:2]):
            name = "main"
        else:
            name = short_frame(re.sub(r":\d+\)$", ")", entry)) if entry != "?" else "watchdog (bench)"
        stacks[name].append(line)
        counts[name] += int(count)
    total = sum(counts.values())
    if not total:
        return {"error": "no samples"}
    threads: dict[str, Any] = {}
    for name, lines in stacks.items():
        summary = summarize("\n".join(lines))
        summary["share_pct"] = round(100 * counts[name] / total, 1)
        threads[name] = summary
    return {"samples": total, "threads": threads}
