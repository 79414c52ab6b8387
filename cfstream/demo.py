"""``cfstream demo``: the seed page's notification example, end to end, as a timeline.

A user edits a document five times in quick succession. Each edit calls ``send_notification2``,
deferred on (user, document) with a 2-second delay. The five calls collapse into one execution,
two seconds after the last edit, with the last edit's arguments; every caller gets its result.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

import cfstream as cf
from cfstream.clock import now_ms
from cfstream.events.tail import describe, short_id, tail
from cfstream.examples import notifications
from cfstream.kafka.topics import ensure_topics

# A cold processor joins its group and creates its changelog before anything fires.
READY_TIMEOUT = 120.0
EDITS = 5
EDIT_INTERVAL = 0.3  # seconds between edits: well inside the 2 s quiet period


@contextmanager
def services(settings: cf.Settings, workdir: Path, console: Console) -> Iterator[None]:
    """A processor and a worker in child processes, stopped (SIGTERM) on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    # State kept from an earlier run against a broker whose data has since gone is ahead of the
    # changelog: the processor notices and starts it over (cfstream.processor.restore).
    env = {**os.environ, **settings.to_env(), "CFSTREAM_STATE_DIR": str(workdir / "state"),
           "CFSTREAM_HTTP_PORT": "0"}
    commands = {"processor": ["processor"],
                "worker": ["worker", "cfstream.examples.notifications"]}
    procs = []
    for name, args in commands.items():
        log = (workdir / f"{name}.log").open("ab")
        procs.append(subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
            [sys.executable, "-m", "cfstream", *args], env=env, stdout=log,
            stderr=subprocess.STDOUT))
        console.print(f"started {name} (pid {procs[-1].pid}, log {workdir / f'{name}.log'})")
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def run(settings: cf.Settings, *, producer_only: bool = False,
        workdir: Path = Path(".cfstream/demo")) -> None:
    console = Console(highlight=False, soft_wrap=True)
    ensure_topics(settings)
    client = cf.configure(settings)
    if producer_only:
        show(client, console)
        return
    with services(settings, workdir, console):
        console.print("waiting for the processor and worker to be ready…")
        notifications.send_reminder.with_delay(0).submit_to(client, 0).result(
            timeout=READY_TIMEOUT)
        show(client, console)


def show(client: cf.Client, console: Console) -> None:
    console.print(
        "\n[bold]@cf.task(delay=2, defer=lambda u, d, _: f\"#{u}:#{d}\")[/bold]\n"
        "def send_notification2(user_id, document_id, update): ...\n"
        f"\nuser 1 edits document 7 {EDITS} times, {EDIT_INTERVAL}s apart:\n"
    )
    origin = now_ms()
    ids: set[str] = set()
    lines: list[dict[str, Any]] = []
    done = threading.Event()

    def watch() -> None:
        for event in tail(client.settings, follow=True, since_ms=origin - 1000,
                          stop=done.is_set):
            if event.get("id") in ids:
                lines.append(event)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    calls, timeline = [], []
    for i in range(1, EDITS + 1):
        call = notifications.send_notification2.submit_to(client, 1, 7, f"edit {i}")
        ids.add(call.id)
        calls.append(call)
        at = (now_ms() - origin) / 1000
        timeline.append((at, f"+{at:7.3f}s  call      {short_id(call.id)}  "
                             f"send_notification2(1, 7, 'edit {i}')"))
        time.sleep(EDIT_INTERVAL)
    results = [call.result(timeout=60) for call in calls]
    deadline = time.monotonic() + 10  # the reader of results may be ahead of the watcher
    while not any(e["type"] == "succeeded" for e in lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    done.set()
    timeline += [((e["ts_ms"] - origin) / 1000, describe(e, origin)) for e in lines]
    for _, line in sorted(timeline, key=lambda item: item[0]):
        console.print(line, markup=False)
    started = [e for e in lines if e["type"] == "started"]
    console.print(f"\n[bold green]{EDITS} calls -> {len(started)} execution[/bold green]; "
                  f"every caller got: {results[0]!r}")
    if started:
        late = (started[0]["ts_ms"] - started[0]["due_ms"]) / 1000
        console.print(f"it ran once, with the latest arguments, {late:.3f}s after it was due "
                      "(due = 2 s after the last edit)")
