"""Where a replica's start-up time goes, said once, when its first records reach their tasks.

A replica launched onto a backlog should be processing calls within half a second. The time from
the process's start to its first records splits into: the interpreter and imports (until the
loop's code runs), the topics check, the warm-up (copies taken before joining, when the group's
assignment can be predicted), the group join (subscribe to the first assignment), the restore
of the assigned partitions (named only if every one was restored before the first records
came), and the first fetch. The log line names each, and the metrics keep them
(``cfstream_startup_seconds``).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def process_age() -> float | None:
    """Seconds since this process started (Linux's /proc), None where that is unknown."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class Startup:
    """Phases in order: :meth:`mark` ends the current one; :meth:`first_records` ends the last
    and reports them all."""

    def __init__(self) -> None:
        age = process_age()
        self.phases: list[tuple[str, float]] = [] if age is None else [("interpreter and imports",
                                                                         age)]
        self._since = time.monotonic()
        self.done = False

    def mark(self, phase: str) -> None:
        """``phase`` ended now (marked once: a later call, say a second assignment, is not
        start-up)."""
        if self.done or any(name == phase for name, _ in self.phases):
            return
        now = time.monotonic()
        self.phases.append((phase, now - self._since))
        self._since = now

    def first_records(self) -> dict[str, float] | None:
        """The first records are handed to their task: the phases, logged (None after the first
        time)."""
        if self.done:
            return None
        self.mark("first fetch")
        self.done = True
        total = sum(seconds for _, seconds in self.phases)
        logger.info("processing calls %.2fs after the process started: %s", total,
                    ", ".join(f"{name} {seconds:.2f}s" for name, seconds in self.phases))
        return dict(self.phases)
