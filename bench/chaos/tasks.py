"""Tasks the chaos harness's workers run: ``cfstream worker bench.chaos.tasks``.

Every run appends ``"<execution id> <task> <key> <value>\\n"`` to ``$CHAOS_RECORD_DIR/<pid>.log``
with one unbuffered ``write`` on an ``O_APPEND`` descriptor, so lines from the pool's threads never
interleave and a line written before a SIGKILL is on disk. The harness reconciles these records
(what really ran) with the events topic (what cfstream says happened).
"""

from __future__ import annotations

import os
import threading

import cfstream as cf

# The debounce window of the two deferred tasks, in seconds.
DEFER_DELAY = 1.0
# Delay-only calls are submitted with one of these delays (``delayed.with_delay(d)``).
DELAYS = (0.5, 1.0, 1.5, 2.0)

_lock = threading.Lock()
_fd: int | None = None


def _record(task: str, key: str, value: object) -> None:
    global _fd
    directory = os.environ.get("CHAOS_RECORD_DIR")
    if not directory:
        return
    with _lock:
        if _fd is None:
            _fd = os.open(os.path.join(directory, f"{os.getpid()}.log"),
                          os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    execution = cf.current_execution()
    line = f"{execution.id if execution else '-'} {task} {key} {value}\n"
    os.write(_fd, line.encode())


@cf.task(delay=DEFER_DELAY, defer=True)
def debounce_all(key: str) -> str:
    """Deferred on all its arguments (the key alone)."""
    _record("debounce_all", key, "-")
    return key


@cf.task(delay=DEFER_DELAY, defer=lambda k, _v: k)
def debounce_key(key: str, value: int) -> int:
    """Deferred on a key function: the latest call's value wins."""
    _record("debounce_key", key, value)
    return value


@cf.task(delay=DELAYS[1])
def delayed(key: str, value: int) -> int:
    """Delay only: every call runs."""
    _record("delayed", key, value)
    return value


@cf.task()
def probe(n: int) -> int:
    """Readiness probe: not recorded."""
    return n
